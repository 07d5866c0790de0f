"""Load test for `zoo serve`: concurrent clients post one photo to /api/predict on loopback,
with micro-batching off (--max-batch 1) and on, at each --concurrency.

    python benchmarks/serve_load.py --run resnet50-1 --concurrency 1,4,16 --duration 10 --repeat 3
    python benchmarks/serve_load.py --device cuda --max-batch 64 --batch-wait-ms 10 --image rock.jpg

The app runs in this process (uvicorn thread on 127.0.0.1, free port) around a real run (the
model's cost is what batching changes). Each test is bounded by --duration and --max-requests,
whichever comes first. Prints requests/s, latency percentiles (client side, milliseconds) and the
error count of each test, and the speed-up batching gives (median requests/s, on / off).
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

from zoo.errors import ZooError
from zoo.evaluate.predictor import load_predictor
from zoo.models.runtime import Runtime
from zoo.serve import create_app, run_in_thread
from zoo.store.leaderboard import best_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="run or ensemble to serve (default: the leaderboard's best)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--concurrency", default="1,4,16",
                        help="comma-separated numbers of concurrent clients (each 1-64)")
    parser.add_argument("--max-batch", type=int, default=32, help="photos per forward pass with batching")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="batching wait (milliseconds)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per test (at most 300)")
    parser.add_argument("--repeat", type=int, default=1, help="tests per setting, off and on alternating")
    parser.add_argument("--max-requests", type=int, default=10_000, help="stop a test after this many requests")
    parser.add_argument("--image", type=Path, help="photo to post (default: a generated 640x480 JPEG)")
    args = parser.parse_args(argv)
    try:
        args.concurrency = [int(n) for n in args.concurrency.split(",")]
    except ValueError:
        parser.error("--concurrency must be numbers separated by commas, such as 1,4,16")
    if not all(1 <= n <= 64 for n in args.concurrency):
        parser.error("--concurrency values must be between 1 and 64")
    if not 0 < args.duration <= 300:
        parser.error("--duration must be in (0, 300] seconds")
    if min(args.max_requests, args.repeat) < 1 or args.max_batch < 2 or args.batch_wait_ms < 0:
        parser.error("need --max-requests and --repeat >= 1, --max-batch >= 2 and --batch-wait-ms >= 0")
    return args


def load(args: argparse.Namespace) -> Any:
    """The run to serve, on the device asked for; a clear exit when either is missing."""
    try:
        runtime = Runtime.create(args.device)
        run = args.run or best_run()
        if run is None:
            sys.exit("No finished run to serve: train one (zoo train custom_cnn) or pass --run.")
        return load_predictor(run, runtime=runtime)
    except ZooError as exc:
        sys.exit(str(exc))


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


def measure(predictor: Any, photo: bytes, clients: int, args: argparse.Namespace,
            max_batch: int) -> dict[str, Any]:
    """One load test of a fresh app around `predictor` that batches up to `max_batch` photos."""
    app = create_app(predictor, max_upload_bytes=max(len(photo), 10 * 1024 * 1024),
                     max_batch=max_batch, batch_wait_ms=args.batch_wait_ms)
    with run_in_thread(app) as url:
        warm_up = httpx.post(url + "/api/predict", files={"file": ("photo", photo)}, timeout=60.0)
        if warm_up.status_code != 200:
            sys.exit(f"The first request failed (HTTP {warm_up.status_code}): {warm_up.text}")
        return hammer(url, photo, clients, args.duration, args.max_requests)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    photo = args.image.read_bytes() if args.image else default_photo()
    predictor = load(args)
    print(f"model {predictor.name}, photo {len(photo):,} bytes, batching: up to {args.max_batch} "
          f"photos, {args.batch_wait_ms:g} ms wait")
    print("clients  batching   req/s   p50 ms   p95 ms  errors")
    for clients in args.concurrency:
        rps: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.repeat):  # off and on alternate, so a drifting load hits both alike
            for label, max_batch in (("off", 1), ("on", args.max_batch)):
                result = measure(predictor, photo, clients, args, max_batch)
                rps[label].append(result["rps"])
                kinds = f" ({', '.join(result['error_kinds'])})" if result["errors"] else ""
                print(f"{clients:7d}  {label:8s} {result['rps']:7.1f} {result['p50_ms']:8.1f} "
                      f"{result['p95_ms']:8.1f}  {result['errors']}{kinds}")
        ratio = float(np.median(rps["on"]) / np.median(rps["off"]))
        print(f"{clients:7d}  speed-up {ratio:6.2f}x (median req/s on / off)")


if __name__ == "__main__":
    main()
