"""Models: the registry (a leaf), the factory and pretrained weights, the zoo's own architectures
and batched inference. May import the ground modules and ``zoo.data``.

Importing this package registers the built-in architectures (``zoo/models/architectures/``).
"""
from zoo.models import architectures  # noqa: F401  (registers the zoo's architectures)
