"""`zoo data fetch` against a local stand-in for GitHub (tree API + raw files) on 127.0.0.1."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

import pytest
from helpers_eval import COLOURS, TINY, invoke, write_photos

from zoo.data.fetch import LISTING, MIRROR_ENV, FetchError, blob_sha, fetch
from zoo.data.sources import SOURCES, Source

REPO, COMMIT, PATH = "someone/photos", "0123456789abcdef0123456789abcdef01234567", "data/tiny"
ODD = {"azurite/azurite_0.png": "azurite/5. blue+stone %2f x.png",  # quoting: space, '+', '%2f'
       "malachite/malachite_0.png": "malachite/9. ma"}                # no image extension
GAP = "cinnabar/missing.jpg"


class Mirror:
    """A small dataset's files in GitHub's layouts, with a log of the files asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        self.missing: set[str] = set()    # answered with 404 (a name, or "tree")
        self.serve_before_cut = -1        # after this many file requests, cut every connection
        self.short: set[str] = set()      # sent with half their body

    def tree(self) -> bytes:
        blobs = [{"path": f"{PATH}/{n}", "type": "blob", "size": len(b),
                  "sha": blob_sha([b], len(b))} for n, b in self.files.items()]
        gap = {"path": f"{PATH}/{GAP}", "type": "blob", "size": 3, "sha": blob_sha([b"abc"], 3)}
        return json.dumps({"sha": COMMIT, "tree": [{"path": PATH, "type": "tree"}, *blobs, gap],
                           "truncated": False}).encode()

    def answer(self, path: str) -> tuple[bytes | None, int]:
        """The body to send for ``path`` (None: 404) and the length to announce."""
        if path.startswith(f"/repos/{REPO}/git/trees/{COMMIT}"):
            return (None, 0) if "tree" in self.missing else (self.tree(), len(self.tree()))
        name = path.removeprefix(f"/{REPO}/{COMMIT}/{PATH}/")
        self.requests.append(name)
        body = None if name in self.missing else self.files.get(name)
        if body is None or name not in self.short:
            return body, len(body or b"")
        return body[:len(body) // 2], len(body)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body, length = mirror.answer(unquote(self.path))
                if 0 <= mirror.serve_before_cut < len(mirror.requests):
                    return  # closes the connection without an answer
                if body is None:
                    return self.send_error(404)
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass
        return Handler


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    """A running mirror of 3 classes x 6 photos, and a 'tiny' dataset entry that points at it."""
    paths = write_photos(tmp_path / "upstream", COLOURS, 6)
    names = [p.relative_to(p.parents[1]).as_posix() for p in paths]
    site = Mirror({ODD.get(n, n): p.read_bytes() for n, p in zip(names, paths)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), site.handler())
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    counts = {cls: 6 for cls in COLOURS} | {"cinnabar": 7}
    monkeypatch.setitem(SOURCES, "tiny", Source(REPO, COMMIT, PATH, counts, "test photos, no "
                                                "licence", "https://example.org/tiny",
                                                frozenset({GAP})))
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    yield site
    server.shutdown()
    server.server_close()


def on_disk(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


def compact(text: str) -> str:
    """``text`` without spaces: rich folds a long URL across lines."""
    return text.replace(" ", "")


def test_fetch_downloads_checks_and_reports(mirror: Mirror, tmp_path: Path) -> None:
    res = invoke(["data", "fetch", "tiny", "--to", str(tmp_path / "got")])
    assert res.exit_code == 0, res.said
    assert on_disk(tmp_path / "got") == mirror.files
    assert "18 files" in res.said and "18 downloaded" in res.said
    assert "test photos, no licence" in res.said
    assert GAP in res.said  # the known gap is named, not fatal
    again = invoke(["data", "fetch", "tiny", "--to", str(tmp_path / "got")])
    assert "0 downloaded, 18 already there" in again.said


def test_interrupted_fetch_resumes_without_downloading_complete_files(mirror: Mirror,
                                                                      tmp_path: Path) -> None:
    mirror.serve_before_cut = 7
    with pytest.raises(FetchError, match="Download failed"):
        fetch("tiny", tmp_path / "got", quiet=True)
    before = on_disk(tmp_path / "got")
    assert 0 < len(before) < 18 and all(mirror.files[n] == b for n, b in before.items())
    mirror.serve_before_cut, mirror.requests = -1, []
    res = fetch("tiny", tmp_path / "got", quiet=True)
    assert sorted(mirror.requests) == sorted(set(mirror.files) - set(before) | {GAP})
    assert len(res.kept) == len(before) and on_disk(tmp_path / "got") == mirror.files


def test_corrupted_and_truncated_files_are_fetched_again(mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "got"
    fetch("tiny", root, quiet=True)
    truncated, corrupted, deleted = sorted(mirror.files)[:3]
    (root / truncated).write_bytes(mirror.files[truncated][:100])
    (root / corrupted).write_bytes(b"x" + mirror.files[corrupted][1:])  # same size, other bytes
    (root / deleted).unlink()
    mirror.requests = []
    res = fetch("tiny", root, quiet=True)
    assert sorted(mirror.requests) == sorted([truncated, corrupted, deleted, GAP])
    assert len(res.downloaded) == 3 and on_disk(root) == mirror.files


def test_short_transfer_is_refused_and_leaves_no_file(mirror: Mirror, tmp_path: Path) -> None:
    name = next(iter(mirror.files))
    mirror.short.add(name)
    res = invoke(["data", "fetch", "tiny", "--to", str(tmp_path / "got")])
    assert res.exit_code == 2 and "expected" in res.said and "again" in res.said
    assert not (tmp_path / "got" / name).exists()


@pytest.mark.parametrize("gone", ["tree", "file"])
def test_404_names_the_url_and_what_to_do(mirror: Mirror, tmp_path: Path, gone: str) -> None:
    mirror.missing.add(gone if gone == "tree" else next(iter(mirror.files)))
    res = invoke(["data", "fetch", "tiny", "--to", str(tmp_path / "got")])
    assert res.exit_code == 2, res.said
    url = f"/repos/{REPO}/git/trees/{COMMIT}" if gone == "tree" else f"/{REPO}/{COMMIT}/{PATH}/"
    assert url in compact(res.said) and "HTTP 404" in res.said
    assert "https://example.org/tiny" in res.said and "--data DIR" in res.said
    assert "Traceback" not in res.said


def test_refused_connection_names_the_url(mirror: Mirror, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}")
    res = invoke(["data", "fetch", "tiny", "--to", str(tmp_path / "got")])
    assert res.exit_code == 2
    assert f"http://127.0.0.1:{port}/repos/{REPO}" in compact(res.said) and "refused" in res.said
    assert "zoo data fetch tiny" in res.said and not (tmp_path / "got" / LISTING).exists()


def test_listing_that_is_not_the_pinned_dataset_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    mirror.files["quartz/1.png"] = b"not ours"
    res = invoke(["data", "fetch", "tiny", "--to", str(tmp_path / "got")])
    assert res.exit_code == 2 and "does not match the pinned dataset" in res.said


def test_unknown_dataset() -> None:
    res = invoke(["data", "fetch", "nope"])
    assert res.exit_code == 2 and "minet" in res.said


def test_minet_entry_is_pinned() -> None:
    minet = SOURCES["minet"]
    assert minet.total == 956 and len(minet.commit) == 40 and "research" in minet.licence


def test_fetched_folder_trains(mirror: Mirror, tmp_path: Path, zoo_env: Path) -> None:
    root = tmp_path / "got"
    fetch("tiny", root, quiet=True)
    res = invoke(["train", "custom_cnn", "--data", str(root), *TINY])
    assert res.exit_code == 0, res.said
