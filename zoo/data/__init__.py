"""Data: dataset scan, fixed splits, image decoding, the decode cache, transforms, TTA views and
preprocessing. May import only the ground modules (``zoo.errors``, ``zoo.fileio``, ``zoo.console``)."""
