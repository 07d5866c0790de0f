"""Evaluate: metrics, calibration, predictors for runs and ensembles, evaluation of a run on its
test split or a folder, and export. May import ``ensembles``, ``zoo.data``, ``zoo.models`` and
``zoo.store``."""
