"""`zoo data check` and `zoo cache clear`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from zoo.cli.app import DataOpt, QuietOpt, cache_app, data_app
from zoo.console import out, plain, print_reasons
from zoo.errors import ZooError

KEPT_SHOWN = 10  # files not deleted by `zoo cache clear` listed by name

if TYPE_CHECKING:
    from zoo.data.dataset import DatasetIndex
    from zoo.data.splits import Split


@data_app.command("check")
def data_check(data: Optional[str] = DataOpt) -> None:
    """Index a dataset: class counts, unreadable files with reasons, the fixed split.

    [bold]Examples[/]
      zoo data check --data ~/photos/minerals
    """
    from zoo.data.dataset import resolve_data_root, scan_dataset
    from zoo.data.splits import get_split

    index = scan_dataset(resolve_data_root(data))
    try:
        split, notes = get_split(index)
    except ZooError:
        _report(index, None, [])  # the counts and skipped files explain the error that follows
        raise
    _report(index, split, notes)


@data_app.command("fetch")
def data_fetch(name: str = typer.Argument(..., help="Dataset to download: minet."),
               to: Optional[str] = typer.Option(None, "--to", help="Folder; default data/NAME."),
               quiet: bool = QuietOpt) -> None:
    """Download a known public dataset, checking every file; run it again to resume.

    [bold]Examples[/]
      zoo data fetch minet
      zoo data fetch minet --to ~/photos/minet
    """
    from zoo.data.fetch import fetch

    res = fetch(name, to, quiet)
    lines = [f"{len(res.downloaded) + len(res.kept)} files ({res.size / 1e6:.1f} MB) in "
             f"{res.root}: {len(res.downloaded)} downloaded, {len(res.kept)} already there"]
    if res.absent:
        lines.append(f"{len(res.absent)} file(s) not served by the source (known gaps, tried again "
                     "on the next run): " + ", ".join(sorted(e.name for e in res.absent)))
    lines += [f"Licence: {res.source.licence}", f"Use it with --data {res.root} (or ZOO_DATA)."]
    out.print(plain("\n".join(lines)), highlight=False)


def _report(index: DatasetIndex, split: Split | None, notes: list[str]) -> None:
    table = Table(title=plain(f"{index.name}: {len(index.items)} readable images"))
    for col in ("class", "images", "train", "val", "test"):
        table.add_column(col, justify="right" if col != "class" else "left")
    per_split = split.counts_by_class(index) if split else {}
    for cls, n in index.counts().items():
        per = per_split[cls].values() if split else ["-"] * 3
        table.add_row(plain(cls), str(n), *map(str, per))
    out.print(table)
    if split:
        out.print(plain("; ".join([f"split {split.id}"] + notes)), highlight=False)
    if index.skipped:
        print_reasons(out, f"{len(index.skipped)} file(s) skipped:", index.skipped)


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete the decode cache (it is rebuilt on the next run)."""
    from zoo.data.cache import DecodeCache

    cache = DecodeCache()
    cleared = cache.clear()
    out.print(plain(f"freed {_size(cleared.bytes)} ({cleared.entries:,} cache entries) from "
                    f"{cache.root}"), highlight=False, soft_wrap=True)
    if cleared.kept:
        print_reasons(out, f"left {len(cleared.kept)} file(s) there that are not cache entries:",
                      [(path, "not deleted") for path in cleared.kept[:KEPT_SHOWN]])
        if len(cleared.kept) > KEPT_SHOWN:
            out.print(f"  ... and {len(cleared.kept) - KEPT_SHOWN} more")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


