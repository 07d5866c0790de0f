"""Leaderboard rows as a rich table, CSV, JSON or Markdown."""
from __future__ import annotations

import csv
import json
import sys

from rich.table import Table

from zoo.console import out, plain
from zoo.errors import ZooError

SHOWN = ["kind", "name", "model", "test_accuracy", "val_accuracy", "macro_f1", "test_nll", "ece",
         "ece_uncalibrated", "params", "fit_seconds", "infer_img_per_s", "created"]
HEADERS = {"test_accuracy": "test acc", "val_accuracy": "val acc", "macro_f1": "macro-F1",
           "test_nll": "NLL", "ece": "ECE", "ece_uncalibrated": "ECE raw", "fit_seconds": "fit s",
           "infer_img_per_s": "img/s"}
# A terminal too narrow for every column loses these first, in this order (never name or accuracy).
DROP_ORDER = ["created", "model", "kind", "infer_img_per_s", "ece_uncalibrated", "ece", "params",
              "test_nll", "macro_f1", "fit_seconds"]


def _fmt(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key == "params":
        return f"{value / 1e6:.2f}M"
    if key in ("fit_seconds", "infer_img_per_s"):
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_rows(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else SHOWN)
        writer.writeheader()
        writer.writerows(rows)
    elif fmt == "markdown":
        print("| " + " | ".join(HEADERS.get(k, k) for k in SHOWN) + " |")
        print("|" + "---|" * len(SHOWN))
        for row in rows:
            print("| " + " | ".join(_fmt(k, row.get(k)) for k in SHOWN) + " |")
    elif fmt == "table":
        out.print(_table(rows) if rows else "No finished runs yet: try `zoo train custom_cnn`.")
    else:
        raise ZooError(f"Unknown --format '{fmt}': use table, csv, json or markdown.")


def _fitting_columns(cells: dict[str, list[str]], width: int) -> list[str]:
    """The columns that fit ``width`` whole (cell text + 3 for padding and rule, + 1 border)."""
    keys = list(SHOWN)

    def needed() -> int:
        return 1 + sum(3 + max(len(HEADERS.get(k, k)), *map(len, cells[k])) for k in keys)

    for key in DROP_ORDER:
        if needed() <= width:
            break
        keys.remove(key)
    return keys


def _table(rows: list[dict]) -> Table:
    cells = {k: [_fmt(k, row.get(k)) for row in rows] for k in SHOWN}
    keys = _fitting_columns(cells, out.width)
    hidden = len(SHOWN) - len(keys)
    table = Table(title="mineral-zoo leaderboard", caption=(
        f"{hidden} column(s) hidden to fit the terminal: --format markdown shows all" if hidden else None))
    for key in keys:
        table.add_column(HEADERS.get(key, key), no_wrap=True,
                         justify="left" if key in ("kind", "name", "model", "created") else "right")
    for i in range(len(rows)):
        table.add_row(*(plain(cells[k][i]) for k in keys))
    return table
