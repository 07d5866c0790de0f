"""The zoo's own architectures; importing this package registers them."""
from zoo.models import custom_cnn  # noqa: F401
