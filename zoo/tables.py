"""Leaderboard rows as a rich table, CSV, JSON or Markdown."""
from __future__ import annotations

import csv
import json
import sys

from rich.table import Table

from zoo.console import out
from zoo.errors import ZooError

SHOWN = ["kind", "name", "model", "test_accuracy", "val_accuracy", "macro_f1", "test_nll", "ece",
         "params", "fit_seconds", "infer_img_per_s", "created"]
HEADERS = {"test_accuracy": "test acc", "val_accuracy": "val acc", "macro_f1": "macro-F1",
           "test_nll": "NLL", "ece": "ECE", "fit_seconds": "fit s", "infer_img_per_s": "img/s"}


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
        table = Table(title="mineral-zoo leaderboard")
        for key in SHOWN:
            table.add_column(HEADERS.get(key, key), justify="right" if key not in ("kind", "name", "model", "created") else "left")
        for row in rows:
            table.add_row(*(_fmt(k, row.get(k)) for k in SHOWN))
        out.print(table if rows else "No finished runs yet: try `zoo train custom_cnn`.")
    else:
        raise ZooError(f"Unknown --format '{fmt}': use table, csv, json or markdown.")
