"""The per-epoch line fits one line of an 80-column terminal and carries every number; the
Reporter prints library text as it is, styling it itself."""
from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text

from zoo.console import Reporter, epoch_line, plain, printable


def test_epoch_line_fits_80_columns_with_every_number() -> None:
    row = {"epoch": 118, "stage": "finetune", "train_loss": 2.34567, "val_loss": 1.98765,
           "val_accuracy": 0.9366, "lr": 2.49e-4, "seconds": 345.67, "best": True}
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(epoch_line(row))
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80
    for text in ("finetune", "118", "loss 2.346", "val_loss 1.988", "val_acc 0.937", "lr 2.5e-04",
                 "345.7s", "*"):
        assert text in lines[0]


def test_reporter_prints_plain_text_and_styles_it_itself() -> None:
    buffer = io.StringIO()
    rep = Reporter()
    rep.progress.live.console = Console(file=buffer, width=80, force_terminal=True)
    rep.log("run a-1: [bold] is text here", bold="a-1")
    rep.note("skipped [x].png")
    bold_run, dim_note = buffer.getvalue().splitlines()
    assert Text.from_ansi(bold_run).plain == "run a-1: [bold] is text here"  # not markup
    assert Text.from_ansi(dim_note).plain == "skipped [x].png"
    assert bold_run.startswith("run \x1b[1ma-") and dim_note.startswith("\x1b[2mskipped")


def test_names_are_shown_as_they_are_without_terminal_controls() -> None:
    name = "cls[/]x\x1b[2J\x1b]0;pwned\x07\r\x9b1m\tok\n\udce9.jpg"
    assert printable(name) == "cls[/]x\\x1b[2J\\x1b]0;pwned\\x07\\x0d\\x9b1m\tok\n\ufffd.jpg"
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=True)
    console.print(plain(name, "bold"))
    console.print(Text.assemble("done ", plain("[red]run[/red]")))
    shown = Text.from_ansi(buffer.getvalue()).plain
    assert "cls[/]x\\x1b[2J" in shown and "done [red]run[/red]" in shown
    assert "\x07" not in buffer.getvalue() and "\x1b]0" not in buffer.getvalue()


def test_reporter_shows_control_characters_as_escapes() -> None:
    buffer = io.StringIO()
    rep = Reporter()
    rep.progress.live.console = Console(file=buffer, width=80, force_terminal=True)
    rep.note("skipped \x1b[31mred.png")
    assert Text.from_ansi(buffer.getvalue()).plain.strip() == "skipped \\x1b[31mred.png"
