"""Store: run folders (meta, weights, predictions) and the SQLite leaderboard. May import the
ground modules and ``zoo.data``."""
