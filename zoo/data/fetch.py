"""Download a pinned public dataset (``zoo data fetch``): resumable, atomic and checked per file.

The file list comes from GitHub's tree API at the pinned commit (path, size and git blob sha1 of
every file) and is kept beside the photos, so a re-run asks the network only for files it lacks.
Each file is downloaded from raw.githubusercontent.com, checked against its size and blob sha1,
and only then renamed into place: a file that looks complete is complete. A re-run keeps files
that still check out and downloads the rest again (missing, truncated or corrupted ones).
``ZOO_FETCH_MIRROR=URL`` replaces both hosts (``URL/repos/...`` and ``URL/<repo>/<commit>/...``).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from zoo.console import transfer_progress
from zoo.data.sources import SOURCES, Source
from zoo.errors import ZooError
from zoo.fileio import atomic_path, write_json

API, RAW = "https://api.github.com", "https://raw.githubusercontent.com"
MIRROR_ENV = "ZOO_FETCH_MIRROR"
LISTING = ".fetch-listing.json"  # hidden: dataset scans skip it
TIMEOUT_S = 30
WORKERS = 8
_HINTS = {404: "not found: the source may have moved or been deleted",
          403: "refused: GitHub's hourly limit for anonymous requests may be used up",
          429: "too many requests: wait a few minutes"}


class FetchError(ZooError):
    """A download or file list that failed (``fetch`` adds what to do)."""


@dataclass(frozen=True)
class Entry:
    """One file of the dataset: ``<class>/<file>``, its size and its git blob sha1."""

    name: str
    size: int
    sha: str

    @property
    def cls(self) -> str:
        return self.name.split("/")[0]


@dataclass
class FetchResult:
    name: str
    source: Source
    root: Path
    downloaded: list[Entry] = field(default_factory=list)
    kept: list[Entry] = field(default_factory=list)
    absent: list[Entry] = field(default_factory=list)  # known gaps the source did not serve

    @property
    def size(self) -> int:
        return sum(e.size for e in self.downloaded + self.kept)


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ZooError(f"Unknown dataset {name!r}. Known datasets: {', '.join(sorted(SOURCES))}.")
    return SOURCES[name]


def fetch(name: str, dest: str | Path | None = None, quiet: bool = False) -> FetchResult:
    """Download dataset ``name`` into ``dest`` (default ``data/<name>``); resumes a partial copy."""
    source = get_source(name)
    root = Path(dest or Path("data") / name).expanduser().resolve()
    try:
        return _fetch(FetchResult(name, source, root), quiet)
    except FetchError as exc:
        raise FetchError(f"{exc}\n{_advice(name, source)}") from exc


def _fetch(result: FetchResult, quiet: bool) -> FetchResult:
    source, name = result.source, result.name
    entries = _listing(source, result.root)
    with transfer_progress(quiet) as bar:
        task = bar.add_task(name, total=sum(e.size for e in entries), files=f"0/{len(entries)}")
        jobs = [_job(source, result.root, e, lambda n: bar.advance(task, n)) for e in entries]
        for done, (entry, outcome) in enumerate(_run(jobs), 1):
            getattr(result, outcome).append(entry)
            bar.update(task, files=f"{done}/{len(entries)}")
    return result


def _host(default: str) -> str:
    return os.environ.get(MIRROR_ENV, "").rstrip("/") or default


def _tree_url(source: Source) -> str:
    return f"{_host(API)}/repos/{source.repo}/git/trees/{source.commit}?recursive=1"


def _file_url(source: Source, entry: Entry) -> str:
    return f"{_host(RAW)}/{source.repo}/{source.commit}/{quote(f'{source.path}/{entry.name}')}"


def _listing(source: Source, root: Path) -> list[Entry]:
    """The dataset's files at the pinned commit: from the copy kept in ``root``, else the API."""
    kept = root / LISTING
    try:
        data = json.loads(kept.read_text(encoding="utf-8"))
        if data.get("commit") == source.commit:
            return _parse_tree(data, source, str(kept))
    except (OSError, ValueError, AttributeError, FetchError):
        pass  # none yet, or unusable: ask the source again
    url = _tree_url(source)
    entries = _parse_tree(_json(url), source, url)
    write_json(kept, {"repo": source.repo, "commit": source.commit, "tree": [
        {"path": f"{source.path}/{e.name}", "type": "blob", "size": e.size, "sha": e.sha}
        for e in entries]})
    return entries


def _parse_tree(data: dict, source: Source, where: str) -> list[Entry]:
    """The ``<class>/<file>`` blobs under ``source.path`` in a tree-API answer, with the
    pinned number of files per class (anything else means the answer is not this dataset)."""
    prefix = source.path.rstrip("/") + "/"
    try:
        blobs = [(item["path"][len(prefix):], int(item["size"]), str(item["sha"])) for item in
                 data["tree"] if item["type"] == "blob" and item["path"].startswith(prefix)]
    except (KeyError, TypeError, ValueError) as exc:
        raise FetchError(f"{where} did not answer with a GitHub file tree ({exc!r}).") from exc
    entries = [Entry(name, size, sha) for name, size, sha in blobs if _usable(name)]
    counts = {cls: sum(1 for e in entries if e.cls == cls)
              for cls in sorted({e.cls for e in entries} | set(source.counts))}
    if data.get("truncated") or counts != source.counts:
        raise FetchError(f"The file list from {where} does not match the pinned dataset "
                         f"({source.repo}@{source.commit[:7]}): files per class {counts}, "
                         f"expected {source.counts}.")
    return entries


def _usable(name: str) -> bool:
    """``<class>/<file>`` with no hidden or empty part (so nothing escapes the class folder)."""
    parts = name.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts)


def _job(source: Source, root: Path, entry: Entry,
         advance: Callable[[int], object]) -> Callable[[], tuple[Entry, str]]:
    """Keep ``entry``'s file when it checks out, else download it: returns (entry, outcome)."""
    def run() -> tuple[Entry, str]:
        target = root / entry.name
        if _intact(target, entry):
            advance(entry.size)
            return entry, "kept"
        try:
            body = _download(_file_url(source, entry), entry, advance)
        except FetchError:
            if entry.name in source.may_be_absent:  # reported, and tried again on the next run
                return entry, "absent"
            raise
        with atomic_path(target) as tmp:
            tmp.write_bytes(body)
        return entry, "downloaded"
    return run


def _run(jobs: list[Callable[[], tuple[Entry, str]]]) -> Iterator[tuple[Entry, str]]:
    """Results of ``jobs`` on a few threads as they finish; the first error cancels the rest."""
    pool = ThreadPoolExecutor(WORKERS)
    try:
        for future in as_completed([pool.submit(job) for job in jobs]):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def blob_sha(chunks: Iterable[bytes], size: int) -> str:
    """Git's blob id: sha1 of ``b"blob <size>\\0"`` and the content."""
    digest = hashlib.sha1(b"blob %d\0" % size)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _intact(path: Path, entry: Entry) -> bool:
    try:
        if not path.is_file() or path.stat().st_size != entry.size:
            return False
        with open(path, "rb") as fh:
            return blob_sha(iter(lambda: fh.read(1 << 20), b""), entry.size) == entry.sha
    except OSError:
        return False


def _download(url: str, entry: Entry, advance: Callable[[int], object]) -> bytes:
    body = bytearray()
    with _open(url) as resp:
        for chunk in iter(lambda: _read(resp, url), b""):
            body += chunk
            advance(len(chunk))
    sha = blob_sha([bytes(body)], len(body))
    if len(body) != entry.size or sha != entry.sha:
        raise FetchError(f"{url} sent {len(body)} bytes with git sha1 {sha[:12]}, expected "
                         f"{entry.size} bytes with {entry.sha[:12]}.")
    return bytes(body)


def _json(url: str) -> dict:
    with _open(url) as resp:
        text = b"".join(iter(lambda: _read(resp, url), b""))
    try:
        return json.loads(text)
    except ValueError as exc:
        raise FetchError(f"{url} did not answer with JSON ({exc}).") from exc


def _open(url: str) -> http.client.HTTPResponse:
    try:
        return urlopen(Request(url, headers={"User-Agent": "mineral-zoo"}), timeout=TIMEOUT_S)
    except HTTPError as exc:
        reason = _HINTS.get(exc.code, exc.reason)
        raise FetchError(f"Download failed: {url}: HTTP {exc.code} ({reason}).") from exc
    except (URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"Download failed: {url}: cannot connect ({reason}).") from exc


def _read(resp: http.client.HTTPResponse, url: str) -> bytes:
    try:
        return resp.read(1 << 16)
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"Download failed: {url}: connection lost ({exc!r}).") from exc


def _advice(name: str, source: Source) -> str:
    """What to do when a fetch fails: run it again, or download the photos by hand."""
    return (f"Check the network (or {MIRROR_ENV}) and run `zoo data fetch {name}` again: it keeps "
            f"the files already checked. Or download the photos by hand from https://github.com/"
            f"{source.repo}/tree/{source.commit}/{source.path} or {source.manual}, and pass the "
            "folder of class folders with --data DIR (or ZOO_DATA).")
