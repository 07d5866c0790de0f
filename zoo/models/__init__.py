"""Models: the registry (a leaf), the factory and pretrained weights, the zoo's own architectures
and batched inference. May import the ground modules and ``zoo.data``.

Importing this package registers the built-in architectures (each module in it that defines one).
"""
from zoo.models import custom_cnn  # noqa: F401  (registers custom_cnn)
