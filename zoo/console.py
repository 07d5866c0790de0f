"""Rich output: progress bars and per-epoch lines on stderr, results on stdout; ``--quiet`` mutes."""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

out = Console()
err = Console(stderr=True)
# C0 and C1 control characters but tab and newline: ESC starts terminal escape sequences (colours,
# cursor moves, window titles), CR overwrites the line, BEL rings.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` safe to show on a terminal: control characters (ESC, CR, BEL, ...; not tab or
    newline) as visible ``\\x1b`` escapes, undecodable bytes of a file name as U+FFFD."""
    fixed = str(text).encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", fixed)


def plain(text: object, style: str = "") -> Text:
    """``text`` (a file, class or run name; a message quoting one) for rich to show as it is:
    never read as markup (``cls[/]x.jpg``), made ``printable``."""
    return Text(printable(text), style=style)


def print_reasons(console: Console, title: str, items: Iterable[tuple[object, str]]) -> None:
    """``title`` in yellow, then ``  <name>: <reason>`` per item, each name shown as it is."""
    console.print(title, style="yellow", highlight=False, markup=False)
    for name, reason in items:
        console.print(plain(f"  {name}: {reason}"), highlight=False, soft_wrap=True)


def print_error(message: object) -> None:
    """``error: <message>`` on stderr, the message shown as it is."""
    err.print(Text.assemble(("error:", "bold red"), " ", plain(message)), highlight=False)


class Reporter:
    """Progress for one long job: a named bar per phase, plus log lines."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=err, transient=True, disable=quiet)
        self.tasks: dict[str, TaskID] = {}

    def log(self, text: str, style: str = "", bold: str = "") -> None:
        """Print plain ``text`` (never read as markup) in ``style``, with its part ``bold`` in bold."""
        if self.quiet:
            return
        text, bold = printable(text), printable(bold)
        line = self.progress.console.render_str(text, markup=False)  # highlights numbers
        line.stylize(style)
        if bold and (start := text.find(bold)) >= 0:
            line.stylize("bold", start, start + len(bold))
        self.progress.console.print(line)

    def note(self, text: str) -> None:
        """A side remark, dimmed."""
        self.log(text, style="dim")

    def advance(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(self.tasks[phase], completed=done, total=total)

    def epoch(self, row: dict, max_epochs: int) -> None:
        """One finished epoch: advance the epochs bar, reset batch bars, print the epoch line."""
        for phase in [p for p in self.tasks if p != "epochs"]:
            self.progress.update(self.tasks[phase], completed=0)
        self.advance("epochs", row["epoch"], max_epochs)
        if not self.quiet:
            self.progress.console.print(epoch_line(row))


def epoch_line(row: dict) -> str:
    """``stage epoch  loss  val_loss  val_acc  lr  seconds [*: new best]``, one line of an
    80-column terminal."""
    mark = " *" if row.get("best") else ""
    return (f"[bold]{row['stage']:>8}[/] {row['epoch']:>3}  loss {row['train_loss']:.3f}  "
            f"val_loss {row['val_loss']:.3f}  val_acc {row['val_accuracy']:.3f}  "
            f"lr {row['lr']:.1e}  {row['seconds']:.1f}s{mark}")


def transfer_progress(quiet: bool = False) -> Progress:
    """A download bar on stderr: bytes, speed, and the ``files`` field of its task (``3/956``)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TextColumn("{task.fields[files]} files"),
                    TimeRemainingColumn(), console=err, transient=True, disable=quiet)


@contextmanager
def reporting(quiet: bool = False) -> Iterator[Reporter]:
    rep = Reporter(quiet)
    with rep.progress:
        yield rep
