"""Train: recipes, the trainer (stages, schedule, batches), the `zoo train` and `zoo ensemble`
runs, and resume state. May import every layer up to ``zoo.report``."""
