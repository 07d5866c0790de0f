"""The per-epoch line fits one line of an 80-column terminal and carries every number."""
from __future__ import annotations

import io

from rich.console import Console

from zoo.console import epoch_line


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
