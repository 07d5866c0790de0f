"""Store: run folders (meta, weights, predictions), the schema of their files, checkpoint checks
and the SQLite leaderboard. May import the ground modules, ``zoo.data`` and ``zoo.models``."""
