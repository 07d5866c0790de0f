"""Errors a user can cause. The CLI turns them into a clear message and a non-zero exit."""
from __future__ import annotations

import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 60, 60, 40


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with "..."), for user text quoted in messages."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short(value: object) -> str:
    """A short ``repr`` of user input for messages: a huge or deeply nested value stays one line."""
    try:
        return _SHORT.repr(value)
    except ValueError:  # an int too long to print (Python's int_max_str_digits)
        return f"<{type(value).__name__} too long to show>"


class ZooError(Exception):
    """A problem the user can fix: the message says what, where, and what to do."""

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UnreadableImageError(ZooError):
    """A file that is not a decodable image; the message is ``<source>: <reason>``."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class UnsafeFileError(ZooError):
    """A file refused before reading: not a regular file, or over a size limit."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class WeightsNotFoundError(ZooError):
    """Pretrained weights were asked for but none could be found."""
