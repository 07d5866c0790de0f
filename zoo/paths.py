"""Where the zoo keeps its files, from the environment: the run root (``ZOO_HOME``)."""
from __future__ import annotations

import os
from pathlib import Path


def runs_home() -> Path:
    """The run root: run folders, the leaderboard and the decode cache (default ``./runs``)."""
    return Path(os.environ.get("ZOO_HOME") or "runs")
