"""The ``zoo`` command line. Each command is a thin layer over a module that does the work;
each module below registers its commands on the one Typer app."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

# Each module registers its commands on import, listed by `zoo --help` in this order.
from zoo.cli import board, data, ensemble, evaluate, export, predict, report, serve, soup, train, tune  # noqa: F401
from zoo.cli.app import app
from zoo.console import err, print_error
from zoo.errors import ZooError


def crash_log() -> Path:
    """Per-user (a fixed name in a shared /tmp could be a planted symlink)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mineral-zoo" / "last-error.log"


def main() -> None:
    """The ``zoo`` entry point: a user error prints its message, an unexpected one a short note
    pointing to the full traceback (``ZOO_DEBUG=1`` lets it through instead)."""
    try:
        app()
    except ZooError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001  (the last line of defence: no bare tracebacks)
        if os.environ.get("ZOO_DEBUG", "") not in ("", "0"):
            raise
        print_error(f"unexpected {type(exc).__name__}: {exc}\n{_log_traceback()}Run again with "
                    "ZOO_DEBUG=1 to print the traceback, and please report it if it looks like a bug.")
        sys.exit(1)


def _log_traceback() -> str:
    log = crash_log()
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc(), encoding="utf-8")
        return f"The full traceback is in {log}. "
    except OSError:
        return ""
