"""The offline web app (`zoo export RUN --format web`) in headless Chromium: size, speed, parity.

    python benchmarks/webapp.py tf_efficientnet_lite0-1 --photos 40 --json webapp.json

Exports the run as a web app (unless --no-export), serves the folder with a plain static server
on loopback and measures:

- first load: the bytes of every file the service worker caches (what a phone downloads once),
  as stored and gzip-compressed (what a server that compresses would send; `zoo serve` and
  Python's http.server do not compress);
- per photo, over the run's first N test photos: the page's preparation time (decode, Pillow's
  resize, crop) and inference time (onnxruntime-web, WebAssembly), after one warm-up photo;
- parity: max |Δp| between the page's probabilities and PyTorch's (`zoo predict`), and top-1
  agreement;
- offline: the server is stopped and the network switched off, the page reloaded and a photo
  identified from the service worker's cache.
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_webapp_browser import CHROMIUM, LAUNCH_ARGS, identify, static_server  # noqa: E402

from zoo.data.cache import decode_array  # noqa: E402
from zoo.evaluate.export_files import MANIFEST  # noqa: E402
from zoo.evaluate.predictor import load_predictor  # noqa: E402
from zoo.evaluate.webapp import export_web  # noqa: E402
from zoo.store.runs import load_predictions, run_dir  # noqa: E402


def first_load(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST]
    sizes = {p.relative_to(folder).as_posix(): (p.stat().st_size, len(gzip.compress(p.read_bytes(), 6)))
             for p in files}
    return {"bytes": sum(s for s, _ in sizes.values()), "gzip_bytes": sum(g for _, g in sizes.values()),
            "largest": dict(sorted(sizes.items(), key=lambda kv: -kv[1][0])[:3])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--photos", type=int, default=40, help="test photos to identify")
    parser.add_argument("--no-export", action="store_true", help="use the existing export/web/")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    folder = run_dir(args.run) / "export" / "web"
    if not args.no_export:
        export_web(args.run)
    predictor = load_predictor(args.run)
    ids = load_predictions(predictor.path, "test")["ids"].tolist()[:args.photos]
    photos = [Path(predictor.meta["data_root"]) / i for i in ids]
    expected = predictor.predict_arrays([decode_array(p, predictor.decode_side) for p in photos])

    result = {"run": args.run, "first_load": first_load(folder), "photos": len(photos)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(300_000)
        with static_server(folder) as url:
            start = time.perf_counter()
            page.goto(url)
            page.evaluate("window.mineralZoo.ready")
            result["page_ready_s"] = time.perf_counter() - start
            page.evaluate("navigator.serviceWorker.ready")
            identify(page, photos[0])  # warm-up
            answers = [identify(page, photo) for photo in photos]
        got = np.array([a["probabilities"] for a in answers])
        context.set_offline(True)
        page.reload()
        page.evaluate("window.mineralZoo.ready")
        offline = identify(page, photos[0])
        browser.close()
    diff = np.abs(got - expected)
    result.update({
        "prepare_ms_median": statistics.median(a["prepare_ms"] for a in answers),
        "inference_ms_median": statistics.median(a["inference_ms"] for a in answers),
        "inference_ms_max": max(a["inference_ms"] for a in answers),
        "max_abs_dp": float(diff.max()), "mean_abs_dp": float(diff.mean()),
        "photos_over_1e-3": int((diff.max(1) > 1e-3).sum()),
        "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
        "offline_reload_ok": bool(np.abs(np.array(offline["probabilities"]) - got[0]).max() < 1e-6),
    })
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
