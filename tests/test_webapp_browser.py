"""`zoo export --format web` in headless Chromium: the offline app predicts real photos as PyTorch does.

A tiny custom_cnn is trained on a few real photos (64 px, 1 epoch) and exported as a web app,
served by a plain static server on loopback. The page is loaded once, the server is stopped and
the browser's network switched off, the page reloaded (from the service worker's cache) and real
test photos identified: probabilities within 1e-3 of PyTorch's (`zoo predict`). Needs Debian's
Chromium, the `playwright` package and onnxruntime-web (`make install` runs `npm ci`).
"""
from __future__ import annotations

import base64
import functools
import http.server
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_eval import invoke
from PIL import Image
from test_serve_browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS

from zoo.data.cache import decode_array
from zoo.evaluate.export_files import MANIFEST
from zoo.evaluate.predictor import load_predictor
from zoo.store.runs import load_predictions

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("onnx")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing")]
TOLERANCE = 1e-3
TINY_REAL = ["--set", "data.image_size=64", "--set", "train.epochs=1", "--set", "data.batch_size=8",
             "--set", "model.kwargs.widths=[8,16]", "--quiet"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """A plain static file server (no compression, no special headers) for ``folder``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def web_status(probs: np.ndarray, trust: dict) -> str:
    """The page's status rule (web/app.js trustStatus), for PyTorch's probabilities."""
    second, top = np.sort(probs)[-2:]
    if 1 - top > trust["unknown_above"]:
        return "unknown"
    threshold = trust["confidence_threshold"]
    return "confident" if threshold is not None and top >= threshold and second < top else "unsure"


def identify(page: Any, photo: Path) -> dict:
    """The page's answer for ``photo`` (window.mineralZoo.identify)."""
    return page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        return window.mineralZoo.identify(new Blob([bytes]));
    }""", base64.b64encode(photo.read_bytes()).decode())


@pytest.fixture(scope="module")
def web_run(real_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny run on real photos with its web export; yields the run folder."""
    base = tmp_path_factory.mktemp("webapp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(base / "runs"))
        mp.setenv("ZOO_SPLITS_DIR", str(base / "splits"))
        mp.setenv("ZOO_DATA", str(real_subset))
        res = invoke(["train", "custom_cnn", "--name", "tiny", *TINY_REAL])
        assert res.exit_code == 0, res.said
        res = invoke(["export", "tiny", "--format", "web"])
        assert res.exit_code == 0, res.said
        assert "first load" in res.said
        yield base / "runs" / "tiny"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


def test_offline_app_matches_pytorch_on_real_photos(web_run: Path, browser: Any) -> None:
    folder = web_run / "export" / "web"
    predictor = load_predictor("tiny", web_run.parent)
    ids = load_predictions(web_run, "test")["ids"].tolist()
    photos = [Path(predictor.meta["data_root"]) / i for i in ids]
    expected = predictor.predict_arrays([decode_array(p, predictor.decode_side) for p in photos])

    context = browser.new_context(viewport={"width": 900, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    with static_server(folder) as url:
        page.goto(url)
        page.evaluate("window.mineralZoo.ready")
        page.evaluate("navigator.serviceWorker.ready")
        sync_api.expect(page.locator("#offline")).to_contain_text("works without a network")
        cached = page.evaluate("""async () => {
            const names = [];
            for (const key of await caches.keys())
                for (const r of await (await caches.open(key)).keys()) names.push(r.url);
            return names;
        }""")
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    # every file and the page's own URL; the browser keeps the service worker itself
    assert {u[len(url):] for u in cached} == files - {MANIFEST, "sw.js"} | {""}

    context.set_offline(True)  # and the server is gone: only the service worker can answer
    page.reload()
    page.evaluate("window.mineralZoo.ready")
    sync_api.expect(page.locator("#known-list li")).to_have_count(len(predictor.classes))
    page.locator("#file-input").set_input_files(str(photos[0]))
    sync_api.expect(page.locator("#prediction-list .prediction")).to_have_count(3)
    sync_api.expect(page.locator("#trust")).to_have_class(re.compile(r"trust (confident|unsure|unknown)"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webapp-offline.png"), full_page=True)

    answers = [identify(page, p) for p in photos]
    context.close()
    got = np.array([a["probabilities"] for a in answers])
    trust = json.loads((folder / "model.json").read_text())["trust"]
    for answer, probs in zip(answers, expected):  # the same status, unless within |dp| of a threshold
        top = probs.max()
        edges = [1 - trust["unknown_above"], trust["confidence_threshold"] or 2.0]
        if min(abs(top - e) for e in edges) > TOLERANCE:
            assert answer["status"] == web_status(probs, trust)
    assert np.abs(got - expected).max() <= TOLERANCE, np.abs(got - expected).max(1)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert requested and all(u.startswith((url, "blob:", "data:")) for u in requested), requested


STATUS_CASES = [  # (top, second, trust) -> status: the exported rule (zoo.evaluate.trust.export_trust)
    ((0.90, 0.05, {"confidence_threshold": 0.8, "unknown_above": 0.6}), "confident"),
    ((0.70, 0.20, {"confidence_threshold": 0.8, "unknown_above": 0.6}), "unsure"),
    ((0.30, 0.25, {"confidence_threshold": 0.8, "unknown_above": 0.6}), "unknown"),
    ((0.50, 0.50, {"confidence_threshold": 0.5, "unknown_above": 0.9}), "unsure"),   # a tie
    ((0.99, 0.01, {"confidence_threshold": None, "unknown_above": 0.6}), "unsure"),  # never confident
]


def test_page_status_rule(web_run: Path, browser: Any) -> None:
    """web/app.js trustStatus gives each status as the exported rule says (and as web_status,
    which the parity test uses, computes it); no thresholds, no status."""
    page = browser.new_page()
    with static_server(web_run / "export" / "web") as url:
        page.goto(url)
        page.evaluate("window.mineralZoo.ready")
        got = page.evaluate("""async (cases) => {
            const { trustStatus } = await import('./app.js');
            return [...cases.map(([top, second, trust]) => trustStatus(top, second, trust)),
                    trustStatus(0.9, 0.05, null)];
        }""", [list(case) for case, _ in STATUS_CASES])
    page.close()
    assert got == [status for _, status in STATUS_CASES] + [None]
    for (top, second, trust), status in STATUS_CASES:
        assert web_status(np.array([second, top]), trust) == status


def test_resize_is_pillows_to_the_pixel(web_run: Path, browser: Any) -> None:
    """web/pillow.js against Pillow: shrinking (vertical pass first or not), enlarging,
    reducing_gap, and Image.reduce with partial blocks."""
    rng = np.random.default_rng(0)
    page = browser.new_page()
    with static_server(web_run / "export" / "web") as url:
        page.goto(url + "pillow.js")
        for (h, w), (ow, oh), gap in [((97, 131), (37, 50), None), ((640, 480), (341, 256), 3.0),
                                      ((300, 200), (300, 73), None), ((50, 40), (80, 64), None),
                                      ((1001, 999), (73, 73), 3.0)]:
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for op, want in (("resize", Image.fromarray(pixels).resize((ow, oh), Image.Resampling.BICUBIC,
                                                                         reducing_gap=gap)),
                             ("reduce", Image.fromarray(pixels).reduce(3))):
                got = page.evaluate("""async ([op, b64, w, h, ow, oh, gap]) => {
                    const m = await import('./pillow.js');
                    const img = {width: w, height: h, data: Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))};
                    const out = op === 'resize' ? m.resize(img, ow, oh, gap) : m.reduce(img, 3);
                    let s = '';
                    for (const v of out.data) s += String.fromCharCode(v);
                    return btoa(s);
                }""", [op, base64.b64encode(pixels.tobytes()).decode(), w, h, ow, oh, gap])
                want = np.asarray(want)
                assert np.array_equal(np.frombuffer(base64.b64decode(got), np.uint8).reshape(want.shape), want)
    page.close()


def test_zoo_serve_serves_the_app_and_check_finds_damage(web_run: Path) -> None:
    from fastapi.testclient import TestClient
    from test_serve_api import FakePredictor

    from zoo.serve import create_app

    folder = web_run / "export" / "web"
    with TestClient(create_app(FakePredictor(), web_app=folder)) as client:
        page = client.get("/app/")
        assert page.status_code == 200 and "Minerals this model knows" in page.text
        assert client.get("/app/model.json").json()["run"] == "tiny"
    with TestClient(create_app(FakePredictor())) as client:
        missing = client.get("/app/")
        assert missing.status_code == 404 and "zoo export RUN --format web" in missing.text

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(web_run.parent))
        assert invoke(["export", "tiny", "--check"]).exit_code == 0
        (folder / "ort" / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm truncated")
        res = invoke(["export", "tiny", "--check"])
    assert res.exit_code == 2
    assert "web/ort/ort-wasm-simd-threaded.wasm: 14 bytes, expected 11,246,032" in res.said
