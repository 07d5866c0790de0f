"""Rich output: progress bars and per-epoch lines on stderr, results on stdout; ``--quiet`` mutes."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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

out = Console()
err = Console(stderr=True)


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
