"""The leaderboard: one SQLite row per run and per ensemble (``<ZOO_HOME>/zoo.db``).

WAL mode and a busy timeout let two trainings write at once; the table can always be rebuilt
from the run folders, which stay the source of truth.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from zoo.errors import ZooError
from zoo.runs import read_meta, run_names, runs_home

COLUMNS = {
    "name": "TEXT PRIMARY KEY", "kind": "TEXT", "model": "TEXT", "dataset": "TEXT",
    "split_id": "TEXT", "status": "TEXT", "test_accuracy": "REAL", "val_accuracy": "REAL",
    "balanced_accuracy": "REAL", "macro_f1": "REAL", "test_nll": "REAL", "ece": "REAL",
    "params": "INTEGER", "fit_seconds": "REAL", "infer_img_per_s": "REAL", "created": "TEXT",
    "members": "TEXT", "evaluated_on": "TEXT",
}
SORTABLE = [c for c, t in COLUMNS.items() if t in ("REAL", "INTEGER")] + ["name", "created"]
ASCENDING = {"test_nll", "ece", "fit_seconds", "params"}


def db_path(home: Path | None = None) -> Path:
    return (home or runs_home()) / "zoo.db"


def _connect(home: Path | None) -> sqlite3.Connection:
    path = db_path(home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
        return con
    except sqlite3.Error as exc:
        raise ZooError(f"Cannot open the leaderboard {path}: {exc}. Check the folder is writable, "
                       "or rebuild it with `zoo leaderboard --rebuild`.") from exc


def row_from_meta(meta: dict) -> dict:
    """The leaderboard row of a run's or ensemble's meta.json."""
    test = meta.get("metrics", {}).get("test", {})
    val = meta.get("metrics", {}).get("val", {})
    return {
        "name": meta["name"], "kind": meta.get("kind", "model"), "model": meta.get("model"),
        "dataset": meta.get("dataset"), "split_id": meta.get("split_id"),
        "status": meta.get("status"), "test_accuracy": test.get("accuracy"),
        "val_accuracy": val.get("accuracy"), "balanced_accuracy": test.get("balanced_accuracy"),
        "macro_f1": test.get("macro_f1"), "test_nll": test.get("nll"), "ece": test.get("ece"),
        "params": meta.get("params"), "fit_seconds": meta.get("fit_seconds"),
        "infer_img_per_s": meta.get("infer_img_per_s"), "created": meta.get("created"),
        "members": ",".join(meta.get("members", [])) or None,
        "evaluated_on": meta.get("evaluated_on"),
    }


def record(meta: dict, home: Path | None = None) -> None:
    row = row_from_meta(meta)
    with closing(_connect(home)) as con, con:
        con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(row)}) VALUES "
                    f"({', '.join('?' for _ in row)})", list(row.values()))


def rebuild(home: Path | None = None) -> int:
    """Recreate every row from the run folders; returns the number of rows."""
    home = home or runs_home()
    metas = [read_meta(home / name) for name in run_names(home)]
    with closing(_connect(home)) as con, con:
        con.execute("DELETE FROM runs")
    for meta in metas:
        record(meta, home)
    return len(metas)


def rows(home: Path | None = None, sort: str = "test_accuracy", dataset: str | None = None,
         include_unfinished: bool = False) -> list[dict]:
    if sort not in SORTABLE:
        raise ZooError(f"Cannot sort by '{sort}'. Choose one of: {', '.join(SORTABLE)}.")
    order = "ASC" if sort in ASCENDING or sort in ("name",) else "DESC"
    where, args = [], []
    if not include_unfinished:
        where.append("status = 'finished'")
    if dataset:
        where.append("dataset = ?")
        args.append(dataset)
    sql = (f"SELECT * FROM runs {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY {sort} IS NULL, {sort} {order}, val_accuracy DESC, name")
    with closing(_connect(home)) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]


def best_run(home: Path | None = None) -> str | None:
    """The best finished run or ensemble, chosen on validation accuracy (never on test)."""
    best = rows(home, sort="val_accuracy")
    return best[0]["name"] if best else None


def to_json(table: list[dict]) -> str:
    return json.dumps(table, indent=2)
