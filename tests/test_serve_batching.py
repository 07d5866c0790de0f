"""Micro-batching in `zoo serve`: concurrent requests share forward passes and still get their
own answers; a lone photo is not kept waiting; a bad photo or a failing model does not take the
others down; the batcher stops with the app; `--device` picks where the model runs."""
from __future__ import annotations

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from test_serve_api import CLASSES, FakePredictor, colour_probs, image_bytes
from typer.testing import CliRunner

from zoo.cli import app as cli
from zoo.serve import create_app, run_in_thread
from zoo.serve.batching import MicroBatcher

COLOURS = [tuple(int(v) for v in rgb) for rgb in np.random.default_rng(2).integers(0, 256, (16, 3))]


class SlowFake(FakePredictor):
    """The fake model, taking `delay` seconds a call (photos pile up meanwhile); records the size
    of every batch, and fails the calls whose number is in `fail_calls`."""

    def __init__(self, delay: float = 0.05, fail_calls: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.delay = delay
        self.fail_calls = fail_calls
        self.batches: list[int] = []

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray:
        self.batches.append(len(images))
        time.sleep(self.delay)
        if len(self.batches) in self.fail_calls:
            raise RuntimeError("the model broke")
        return super().predict_proba(images)


def post(url: str, data: bytes) -> httpx.Response:
    return httpx.post(url + "/api/predict", files={"file": ("photo.png", data)}, timeout=30)


def top3(probs: np.ndarray) -> list[dict[str, Any]]:
    order = np.argsort(-probs, kind="stable")[:3]
    return [{"class": CLASSES[i], "probability": float(probs[i])} for i in order]


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers() -> None:
    predictor = SlowFake()
    uploads = [image_bytes(colour) for colour in COLOURS]
    alone = [predictor.predict_proba([Image.open(io.BytesIO(u)).convert("RGB")])[0] for u in uploads]
    predictor.batches.clear()
    app = create_app(predictor, max_batch=32, batch_wait_ms=20)
    with run_in_thread(app) as url, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda data: post(url, data), uploads))
    for response, probs in zip(responses, alone, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == top3(probs)  # exactly as one at a time
    assert sum(predictor.batches) == len(uploads)
    assert len(predictor.batches) < len(uploads) and max(predictor.batches) > 1, predictor.batches
    assert predictor.max_active == 1  # the batcher is the model's only caller


def test_unreadable_photos_fail_alone() -> None:
    predictor = SlowFake()
    uploads = [image_bytes(c) if i % 4 else b"not a photo at all" for i, c in enumerate(COLOURS)]
    with run_in_thread(create_app(predictor, batch_wait_ms=20)) as url, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda data: post(url, data), uploads))
    for i, (response, colour) in enumerate(zip(responses, COLOURS, strict=True)):
        if i % 4:
            assert response.json()["predictions"] == top3(colour_probs(colour)), response.text
        else:
            assert response.status_code == 400 and "Unreadable image" in response.json()["detail"]
    assert sum(predictor.batches) == 12


def test_a_failing_forward_pass_fails_its_batch_and_the_server_goes_on() -> None:
    with run_in_thread(create_app(SlowFake(fail_calls=(1,)), batch_wait_ms=0)) as url:
        assert post(url, image_bytes((1, 2, 3))).status_code == 500
        response = post(url, image_bytes((200, 10, 10)))
    assert response.json()["predictions"] == top3(colour_probs((200, 10, 10)))


def run_batcher(batcher: MicroBatcher, photos: int) -> float:
    """Seconds until all of `photos` photos sent at once to `batcher` are answered."""
    async def main() -> float:
        async with batcher.running():
            start = time.perf_counter()
            images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(photos)]
            rows = await asyncio.gather(*(batcher.predict(image) for image in images))
            assert [row.tolist() for row in rows] == [colour_probs((i, 0, 0)).tolist() for i in range(photos)]
            return time.perf_counter() - start

    return asyncio.run(main())


def test_a_lone_photo_waits_no_longer_than_the_wait() -> None:
    predictor = SlowFake(delay=0)
    assert run_batcher(MicroBatcher(predictor.predict_proba, max_batch=32, wait_ms=300), 1) < 0.3 + 1.5
    assert predictor.batches == [1]


def test_a_full_batch_goes_at_once() -> None:
    predictor = SlowFake(delay=0)
    assert run_batcher(MicroBatcher(predictor.predict_proba, max_batch=4, wait_ms=60_000), 8) < 5
    assert predictor.batches == [4, 4]


def test_the_batcher_stops_with_the_app() -> None:
    app = create_app(SlowFake(delay=0))
    with run_in_thread(app) as url:
        assert post(url, image_bytes((9, 9, 9))).status_code == 200
        assert any(t.name.startswith("zoo-batcher") for t in threading.enumerate())
    assert not any(t.name.startswith("zoo-batcher") for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(MicroBatcher(SlowFake().predict_proba).predict(Image.new("RGB", (4, 4))))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_serve_on_a_missing_device_exits_2_naming_what_is_here(zoo_env: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert "not available here; this machine has: cpu" in " ".join(result.output.split())
