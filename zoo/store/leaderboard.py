"""The leaderboard: one SQLite row per run and per ensemble (``<ZOO_HOME>/zoo.db``).

Table ``runs`` also holds a ``<run>+tta`` row (kind ``tta``) once a run was evaluated with
test-time augmentation on its own split; table ``evaluations`` holds scores on external test
folders (``zoo evaluate RUN --data DIR``), ranked with ``zoo leaderboard --on DIR``.
WAL mode and a busy timeout let two trainings write at once; both tables can always be rebuilt
from the run folders (meta.json, evaluations/*.json), which stay the source of truth. The schema
carries a version (``PRAGMA user_version``): a leaderboard from an older mineral-zoo is rebuilt
from the run folders on first use, saying so.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

from zoo.console import err
from zoo.errors import ZooError
from zoo.paths import runs_home
from zoo.store.runs import read_meta, run_names
from zoo.store.schema import StoredEvaluation, read_checked

COLUMNS = {
    "name": "TEXT PRIMARY KEY", "kind": "TEXT", "model": "TEXT", "dataset": "TEXT",
    "split_id": "TEXT", "status": "TEXT", "test_accuracy": "REAL", "val_accuracy": "REAL",
    "balanced_accuracy": "REAL", "macro_f1": "REAL", "test_nll": "REAL", "ece": "REAL",
    "ece_uncalibrated": "REAL", "params": "INTEGER", "fit_seconds": "REAL", "infer_img_per_s": "REAL",
    "created": "TEXT", "members": "TEXT", "evaluated_on": "TEXT",
}
EVAL_COLUMNS = {
    "run": "TEXT", "on_folder": "TEXT", "tta": "INTEGER", "views": "INTEGER", "accuracy": "REAL",
    "balanced_accuracy": "REAL", "macro_f1": "REAL", "nll": "REAL", "ece": "REAL",
    "ece_uncalibrated": "REAL", "n": "INTEGER", "unknown_skipped": "INTEGER",
    "unreadable": "INTEGER", "created": "TEXT",
}
SCHEMA_VERSION = 2  # raise with every change of COLUMNS or EVAL_COLUMNS
SORTABLE = [c for c, t in COLUMNS.items() if t in ("REAL", "INTEGER")] + ["name", "created"]
ASCENDING = {"test_nll", "ece", "ece_uncalibrated", "fit_seconds", "params"}
TTA_SUFFIX = "+tta"


def db_path(home: Path | None = None) -> Path:
    return (home or runs_home()) / "zoo.db"


def _connect(home: Path | None) -> sqlite3.Connection:
    path = db_path(home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        if _version(con) != SCHEMA_VERSION:
            _upgrade(con, home or runs_home())
        return con
    except (sqlite3.Error, OSError) as exc:
        raise ZooError(f"Cannot open the leaderboard {path}: {exc}. ZOO_HOME must be a writable "
                       "folder; if the file is damaged, delete it (the run folders keep every "
                       "result) and run `zoo leaderboard --rebuild`.") from exc


def _version(con: sqlite3.Connection) -> int:
    return con.execute("PRAGMA user_version").fetchone()[0]


def _upgrade(con: sqlite3.Connection, home: Path) -> None:
    """Create the tables, or recreate those of an older schema from the run folders (one
    transaction: concurrent commands wait, and the first one does the work)."""
    with con:
        con.execute("BEGIN IMMEDIATE")
        version = _version(con)
        if version > SCHEMA_VERSION:
            raise ZooError(f"The leaderboard {db_path(home)} was written by a newer mineral-zoo "
                           f"(schema {version}, this one knows {SCHEMA_VERSION}). Upgrade "
                           "mineral-zoo, or move the file away and run `zoo leaderboard --rebuild`.")
        if version == SCHEMA_VERSION:
            return
        old = con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
        con.execute("DROP TABLE IF EXISTS runs")
        con.execute("DROP TABLE IF EXISTS evaluations")
        cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
        con.execute(f"CREATE TABLE runs ({cols})")
        cols = ", ".join(f"{c} {t}" for c, t in EVAL_COLUMNS.items())
        con.execute(f"CREATE TABLE evaluations ({cols}, PRIMARY KEY (run, on_folder, tta))")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if old:
            done = _fill(con, home)
            skipped = f", {len(done.skipped)} damaged run folder(s) skipped" if done.skipped else ""
            err.print(f"note: {db_path(home)} came from an older mineral-zoo; rebuilt it from the "
                      f"run folders ({done.rows} rows{skipped}).", markup=False, highlight=False)


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
        "ece_uncalibrated": test.get("ece_uncalibrated"), "params": meta.get("params"),
        "fit_seconds": meta.get("fit_seconds"),
        "infer_img_per_s": meta.get("infer_img_per_s"), "created": meta.get("created"),
        "members": ",".join(meta.get("members", [])) or None,
        "evaluated_on": meta.get("evaluated_on"),
    }


def tta_row(meta: dict, evaluation: dict) -> dict:
    """The ``<run>+tta`` row: the run's row with test (and validation) scores under TTA."""
    test, val = evaluation["metrics"], evaluation.get("val_metrics") or {}
    speed = meta.get("infer_img_per_s")
    return {**row_from_meta(meta), "name": meta["name"] + TTA_SUFFIX, "kind": "tta",
            "test_accuracy": test["accuracy"], "val_accuracy": val.get("accuracy"),
            "balanced_accuracy": test["balanced_accuracy"], "macro_f1": test["macro_f1"],
            "test_nll": test["nll"], "ece": test["ece"],
            "ece_uncalibrated": test.get("ece_uncalibrated"), "created": evaluation["created"],
            "infer_img_per_s": speed / evaluation["views"] if speed else None,
            "evaluated_on": f"test split, {evaluation['views']}-view TTA"}


def evaluation_row(evaluation: dict) -> dict:
    """The ``evaluations`` row of an external evaluation (``evaluations/<name>.json``)."""
    m = evaluation["metrics"]
    return {"run": evaluation["run"], "on_folder": evaluation["on"], "tta": int(evaluation["tta"]),
            "views": evaluation["views"],
            "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
            "macro_f1": m["macro_f1"], "nll": m["nll"], "ece": m["ece"],
            "ece_uncalibrated": m.get("ece_uncalibrated"), "n": m["n"],
            "unknown_skipped": sum(evaluation.get("unknown", {}).values()),
            "unreadable": len(evaluation.get("unreadable", [])), "created": evaluation["created"]}


def _put(con: sqlite3.Connection, table: str, row: dict) -> None:
    con.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(row)}) VALUES "
                f"({', '.join('?' for _ in row)})", list(row.values()))


def _insert(table: str, row: dict, home: Path | None) -> None:
    """One row in its own transaction; concurrent writers wait (busy timeout) instead of failing."""
    try:
        with closing(_connect(home)) as con, con:
            _put(con, table, row)
    except sqlite3.Error as exc:
        raise ZooError(f"Could not add '{row.get('name') or row.get('run')}' to the leaderboard "
                       f"{db_path(home)}: {exc}. The run folders keep every result; run `zoo "
                       "leaderboard --rebuild` once no other zoo command is writing.") from exc


def record(meta: dict, home: Path | None = None) -> None:
    _insert("runs", row_from_meta(meta), home)


def _evaluation_entry(meta: dict, evaluation: dict) -> tuple[str, dict]:
    """Own test split with TTA -> a ``runs`` row; a folder -> an ``evaluations`` row."""
    if evaluation["on"] is None:
        return "runs", tta_row(meta, evaluation)
    return "evaluations", evaluation_row(evaluation)


def record_evaluation(meta: dict, evaluation: dict, home: Path | None = None) -> None:
    """Rank a stored evaluation."""
    _insert(*_evaluation_entry(meta, evaluation), home)


def _evaluations(path: Path) -> tuple[list[dict], list[str]]:
    """The evaluation records saved in a run folder, and why each damaged one was left out (it
    is re-created by running `zoo evaluate` again)."""
    found, skipped = [], []
    for file in sorted((path / "evaluations").glob("*.json")):
        try:
            found.append(read_checked(file, StoredEvaluation))
        except ZooError as exc:
            skipped.append(str(exc))
    return found, skipped


def stored_evaluations(path: Path) -> list[dict]:
    """The evaluation records saved in a run folder (damaged ones skipped)."""
    return _evaluations(path)[0]


class Rebuilt(NamedTuple):
    rows: int
    skipped: list[str]  # why each damaged run folder or evaluation was left out


def _rows_from_folders(home: Path) -> tuple[list[tuple[str, dict]], list[str]]:
    """(table, row) for every run folder and its stored evaluations, rows named after their
    folders; damaged files left out, with why."""
    found, skipped = [], []
    for name in run_names(home):
        try:
            meta = {**read_meta(home / name), "name": name}
        except ZooError as exc:
            skipped.append(str(exc))
            continue
        found.append(("runs", row_from_meta(meta)))
        evaluations, bad = _evaluations(home / name)
        skipped += bad
        for evaluation in evaluations:
            found.append(_evaluation_entry(meta, evaluation))
    return found, skipped


def _fill(con: sqlite3.Connection, home: Path) -> Rebuilt:
    """Replace every row with those of the run folders, inside the caller's transaction."""
    found, skipped = _rows_from_folders(home)
    con.execute("DELETE FROM runs")
    con.execute("DELETE FROM evaluations")
    for table, row in found:
        _put(con, table, row)
    return Rebuilt(len(found), skipped)


def rebuild(home: Path | None = None) -> Rebuilt:
    """Recreate every row from the run folders in one transaction (a failure keeps the old
    rows); returns the number of rows and the skipped files."""
    home = home or runs_home()
    try:
        with closing(_connect(home)) as con, con:
            return _fill(con, home)
    except sqlite3.Error as exc:
        raise ZooError(f"Could not rebuild the leaderboard {db_path(home)}: {exc}. Its rows are "
                       "unchanged; try again once no other zoo command is writing.") from exc


def _ranking(sort: str) -> str:
    """The ORDER BY terms for ranking by ``sort`` (best first, unscored last)."""
    if sort not in SORTABLE:
        raise ZooError(f"Cannot sort by '{sort}'. Choose one of: {', '.join(SORTABLE)}.")
    order = "ASC" if sort in ASCENDING or sort == "name" else "DESC"
    return f"{sort} IS NULL, {sort} {order}, val_accuracy DESC, name"


def rows(home: Path | None = None, sort: str = "test_accuracy", dataset: str | None = None,
         include_unfinished: bool = False) -> list[dict]:
    ranking = _ranking(sort)
    where, args = [], []
    if not include_unfinished:
        where.append("status = 'finished'")
    if dataset:
        where.append("dataset = ?")
        args.append(dataset)
    sql = (f"SELECT * FROM runs {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY status IS NOT 'finished', {ranking}")  # unfinished runs after every finished one
    with closing(_connect(home)) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]


_ON_SQL = f"""
    SELECT e.run || CASE WHEN e.tta THEN '{TTA_SUFFIX}' ELSE '' END AS name,
           CASE WHEN e.tta THEN 'tta' ELSE r.kind END AS kind, r.model, r.dataset, r.split_id,
           e.accuracy AS test_accuracy,
           CASE WHEN e.tta THEN t.val_accuracy ELSE r.val_accuracy END AS val_accuracy,
           e.balanced_accuracy, e.macro_f1, e.nll AS test_nll, e.ece, e.ece_uncalibrated,
           r.params, r.fit_seconds, r.infer_img_per_s / e.views AS infer_img_per_s,
           e.created, r.members, e.on_folder AS evaluated_on, e.n, e.unknown_skipped, e.unreadable
    FROM evaluations e LEFT JOIN runs r ON r.name = e.run
         LEFT JOIN runs t ON t.name = e.run || '{TTA_SUFFIX}'
    WHERE e.on_folder = ?"""


def evaluated_folders(home: Path | None = None) -> list[str]:
    with closing(_connect(home)) as con:
        return [r[0] for r in con.execute("SELECT DISTINCT on_folder FROM evaluations ORDER BY 1")]


def rows_on(on: str, home: Path | None = None, sort: str = "test_accuracy",
            dataset: str | None = None) -> list[dict]:
    """Leaderboard rows scored on the external folder ``on``: ``test_*`` columns are on that folder."""
    ranking = _ranking(sort)
    args: list[str] = [on]
    where = ""
    if dataset:
        where, args = "WHERE dataset = ?", [on, dataset]
    sql = f"SELECT * FROM ({_ON_SQL}) {where} ORDER BY {ranking}"
    with closing(_connect(home)) as con:
        con.row_factory = sqlite3.Row
        found = [dict(r) for r in con.execute(sql, args)]
    if not found and not dataset:
        known = evaluated_folders(home)
        listed = f"Evaluated folders: {', '.join(known)}." if known else "Nothing was evaluated yet."
        raise ZooError(f"No evaluations on '{on}'. {listed} Evaluate on a folder with "
                       "`zoo evaluate RUN --data DIR`; --on takes the folder's name.")
    return found


def best_run(home: Path | None = None) -> str | None:
    """The best finished run or ensemble, chosen on validation accuracy (never on test)."""
    best = [r for r in rows(home, sort="val_accuracy") if r["kind"] != "tta"]
    return best[0]["name"] if best else None
