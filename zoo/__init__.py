"""mineral-zoo: train, rank and ensemble image classifiers for mineral photos."""

__version__ = "0.1.0"
