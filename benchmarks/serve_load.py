"""Load test for `zoo serve`: N concurrent clients post one photo to /api/predict on loopback.

    python benchmarks/serve_load.py --run resnet50-1 --clients 8 --duration 10 --image rock.jpg
    python benchmarks/serve_load.py --fake            # server overhead only, no model

The app runs in this process (uvicorn thread on 127.0.0.1, free port). The test is bounded by
--duration and --max-requests, whichever comes first. Prints requests/s, latency percentiles
(client side, milliseconds) and the error count.
"""
from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from zoo.serve import create_app, run_in_thread


class FakePredictor:
    """Probabilities proportional to the mean R, G, B of the photo: measures the server alone."""

    name = "fake-colour"
    classes = ["biotite", "pyrite", "quartz"]
    decode_side = 256  # what a 224 px model decodes at

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray:
        weights = np.stack([np.asarray(img, dtype=float).reshape(-1, 3).mean(0) + 1.0 for img in images])
        return weights / weights.sum(axis=1, keepdims=True)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "model", "model": "fake", "classes": self.classes, "metrics": {}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="run or ensemble to serve (default: the leaderboard's best)")
    source.add_argument("--fake", action="store_true", help="serve a fake predictor (no model)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (1-64)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (at most 300)")
    parser.add_argument("--max-requests", type=int, default=10_000, help="stop after this many requests")
    parser.add_argument("--image", type=Path, help="photo to post (default: a generated 640x480 JPEG)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64:
        parser.error("--clients must be between 1 and 64")
    if not 0 < args.duration <= 300:
        parser.error("--duration must be in (0, 300] seconds")
    if args.max_requests < 1:
        parser.error("--max-requests must be at least 1")
    return args


def load(args: argparse.Namespace) -> Any:
    if args.fake:
        return FakePredictor()
    from zoo.evaluate.predictor import load_predictor
    from zoo.store.leaderboard import best_run

    run = args.run or best_run()
    if run is None:
        sys.exit("No finished run to serve: train one (zoo train) or pass --fake.")
    return load_predictor(run)


def default_photo() -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def hammer(base_url: str, photo: bytes, clients: int, duration: float, max_requests: int) -> dict[str, Any]:
    """Post `photo` from `clients` threads until time or the request budget runs out."""
    latencies: list[float] = []
    errors: list[str] = []
    budget = threading.Semaphore(max_requests)
    deadline = time.perf_counter() + duration
    record = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=60.0) as http:
            while time.perf_counter() < deadline and budget.acquire(blocking=False):
                start = time.perf_counter()
                try:
                    response = http.post("/api/predict", files={"file": ("photo", photo)})
                    failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    failure = type(exc).__name__
                with record:
                    latencies.append(time.perf_counter() - start)
                    if failure:
                        errors.append(failure)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if ms.size else float("nan"),
        "p95_ms": float(np.percentile(ms, 95)) if ms.size else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    photo = args.image.read_bytes() if args.image else default_photo()
    predictor = load(args)
    with run_in_thread(create_app(predictor, max_upload_bytes=max(len(photo), 10 * 1024 * 1024))) as url:
        warm_up = httpx.post(url + "/api/predict", files={"file": ("photo", photo)}, timeout=60.0)
        if warm_up.status_code != 200:
            sys.exit(f"The first request failed (HTTP {warm_up.status_code}): {warm_up.text}")
        result = hammer(url, photo, args.clients, args.duration, args.max_requests)
    print(f"model      {predictor.name}")
    print(f"clients    {args.clients}, photo {len(photo):,} bytes")
    print(f"requests   {result['requests']} in {result['seconds']:.1f} s = {result['rps']:.1f} req/s")
    print(f"latency    p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms")
    kinds = f" ({', '.join(result['error_kinds'])})" if result["errors"] else ""
    print(f"errors     {result['errors']}{kinds}")


if __name__ == "__main__":
    main()
