"""The leaderboard table: a narrow terminal drops the least important columns instead of
squeezing every cell into an ellipsis."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from zoo.report import tables

ROWS = [{"kind": "model", "name": "tf_efficientnet_lite0-1", "model": "tf_efficientnet_lite0",
         "test_accuracy": 0.8944, "val_accuracy": 0.9366, "macro_f1": 0.8977, "test_nll": 0.2998,
         "ece": 0.0347, "params": 3_380_000, "fit_seconds": 119.0, "infer_img_per_s": 78.0,
         "created": "2026-11-26T01:20:33+00:00"}]


def _render(width: int, monkeypatch: pytest.MonkeyPatch) -> str:
    buffer = io.StringIO()
    monkeypatch.setattr(tables, "out", Console(file=buffer, width=width))
    tables.render_rows(ROWS, "table")
    return buffer.getvalue()


def test_wide_terminal_shows_every_column(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _render(200, monkeypatch)
    for value in ("model", "tf_efficientnet_lite0-1", "0.8944", "3.38M", "2026-11-26T01:20:33+00:00"):
        assert value in text
    assert "…" not in text and "hidden" not in text


@pytest.mark.parametrize("width", [80, 60])
def test_narrow_terminal_keeps_whole_cells_and_says_what_is_hidden(
        width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _render(width, monkeypatch)
    assert all(len(line) <= width for line in text.splitlines())
    assert "…" not in text
    for value in ("tf_efficientnet_lite0-1", "0.8944", "0.9366"):  # name and accuracies stay
        assert value in text
    words = " ".join(text.split())  # the caption may wrap
    assert "2026-11-26" not in text and "column(s) hidden" in words and "--format markdown" in words
