"""The `zoo serve` JSON API and page, with a fake predictor (no model, no network)."""
from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient
from PIL import Image

from zoo.serve.app import STATIC_DIR, _read_body, create_app

CLASSES = ["biotite", "pyrite", "quartz"]


class FakePredictor:
    """Probabilities proportional to the mean R, G, B of the image; records concurrent calls."""

    name = "fake-colour-1"
    classes = CLASSES
    decode_side = 32  # the size of the test images: decoded as they are

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self._count_lock = threading.Lock()

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray:
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.002)  # widen the window in which unguarded calls would overlap
        probs = np.stack([colour_probs(np.asarray(img).reshape(-1, 3).mean(0)) for img in images])
        with self._count_lock:
            self.active -= 1
        return probs

    def heatmaps(self, arrays: list[np.ndarray], targets: list[int]) -> list[np.ndarray]:
        """The fake model's evidence for a class: its colour channel, scaled to [0, 1]."""
        return [a[..., t] / max(1.0, float(a[..., t].max())) for a, t in zip(arrays, targets)]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "model",
            "model": "fake",
            "classes": self.classes,
            "metrics": {"test_accuracy": 0.875, "val_accuracy": 0.9},
        }


def colour_probs(rgb: np.ndarray) -> np.ndarray:
    """The fake model: R -> biotite, G -> pyrite, B -> quartz."""
    weights = np.asarray(rgb, dtype=float) + 1.0
    return weights / weights.sum()


def image_bytes(colour: tuple[int, int, int], fmt: str = "PNG", size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format=fmt)
    return buf.getvalue()


def noisy_png(size: int = 48) -> bytes:
    """A PNG that compresses badly, so truncating it cuts into the pixel data."""
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims `width` x `height` pixels (a bomb)."""
    png = image_bytes((10, 20, 30), size=1)
    ihdr = png[16:29]  # IHDR data: width, height, bit depth, colour type, ...
    data = struct.pack(">II", width, height) + ihdr[8:]
    chunk = b"IHDR" + data
    return png[:8] + struct.pack(">I", len(data)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


@pytest.fixture()
def predictor() -> FakePredictor:
    return FakePredictor()


@pytest.fixture()
def client(predictor: FakePredictor) -> TestClient:
    with TestClient(create_app(predictor, max_upload_bytes=200_000)) as test_client:
        yield test_client


def post_file(client: TestClient, data: bytes, name: str = "photo.png") -> Any:
    return client.post("/api/predict", files={"file": (name, data, "application/octet-stream")})


def assert_good_prediction(response: Any, colour: tuple[int, int, int]) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    expected = colour_probs(colour)
    order = np.argsort(-expected, kind="stable")
    assert [p["class"] for p in body["predictions"]] == [CLASSES[i] for i in order]
    probs = [p["probability"] for p in body["predictions"]]
    assert probs == sorted(probs, reverse=True)
    np.testing.assert_allclose(probs, expected[order], atol=1e-9)
    assert sum(probs) <= 1.0 + 1e-9
    assert body["model"] == "fake-colour-1"
    assert body["latency_ms"] >= 0.0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_predict_returns_top3_sorted_with_model_name(client: TestClient, fmt: str) -> None:
    colour = (220, 40, 10)
    response = post_file(client, image_bytes(colour, fmt), name=f"rock.{fmt.lower()}")
    # JPEG is lossy, so compare with what the fake sees after decoding.
    decoded = np.asarray(Image.open(io.BytesIO(image_bytes(colour, fmt)))).reshape(-1, 3).mean(0)
    assert_good_prediction(response, tuple(decoded))
    assert response.json()["predictions"][0]["class"] == "biotite"


def test_model_info_and_health(client: TestClient, predictor: FakePredictor) -> None:
    assert client.get("/api/model").json() == predictor.info()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]["requestBody"]


def test_page_and_assets_are_local(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    for needle in ('id="file-input"', 'accept="image/*"', 'capture="environment"',
                   'id="results"', 'aria-live="polite"', '<label'):
        assert needle in html
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


BAD_UPLOADS = {
    "text file": b"quartz is SiO2, not a photo\n" * 20,
    "truncated PNG": noisy_png()[:3000],
    "truncated JPEG": image_bytes((90, 120, 200), "JPEG", size=64)[:400],
    "decompression bomb": png_declaring(30_000, 30_000),
    "empty file": b"",
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_uploads_get_clear_4xx_and_server_keeps_serving(client: TestClient, kind: str) -> None:
    response = post_file(client, BAD_UPLOADS[kind])
    assert response.status_code in (400, 413, 415), (kind, response.text)
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    assert_good_prediction(post_file(client, image_bytes((10, 200, 30))), (10, 200, 30))


def test_bomb_is_refused_without_decoding(client: TestClient) -> None:
    bomb = png_declaring(30_000, 30_000)
    assert len(bomb) < 200
    response = post_file(client, bomb)
    assert response.status_code == 400
    assert "pixels" in response.json()["detail"]


def test_upload_over_limit_is_413(client: TestClient) -> None:
    big = image_bytes((1, 2, 3)) + b"\0" * 200_001
    response = post_file(client, big)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    # A body far beyond the limit is refused from its Content-Length alone.
    response = client.post("/api/predict", content=b"x" * 400_000,
                           headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413
    assert_good_prediction(post_file(client, image_bytes((10, 20, 230))), (10, 20, 230))


def test_body_reading_stops_at_the_limit() -> None:
    """A client streaming an endless body (no Content-Length) is cut off just past the limit."""
    received = 0

    async def endless() -> dict[str, Any]:
        nonlocal received
        received += 1000
        return {"type": "http.request", "body": b"\0" * 1000, "more_body": True}

    request = Request({"type": "http", "method": "POST", "headers": []}, endless)
    with pytest.raises(HTTPException) as caught:
        asyncio.run(_read_body(request, 50_000, HTTPException(status_code=413)))
    assert caught.value.status_code == 413
    assert received <= 51_000


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({}, 400),  # empty request
        ({"data": {"photo": "not the right field"}, "files": {"other": ("a.png", b"x")}}, 422),
        ({"data": {"file": "a string, not a file"}, "files": {"other": ("a.png", b"x")}}, 422),
        ({"json": {"file": "abc"}}, 415),
        ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}}, 400),
    ],
    ids=["empty", "missing-field", "field-not-a-file", "json-body", "malformed-multipart"],
)
def test_malformed_requests_get_clear_errors(client: TestClient, kwargs: dict, status: int) -> None:
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert_good_prediction(post_file(client, image_bytes((200, 200, 10))), (200, 200, 10))


def test_concurrent_requests_get_their_own_answers(client: TestClient, predictor: FakePredictor) -> None:
    colours = [(int(r), int(g), int(b)) for r, g, b in
               np.random.default_rng(1).integers(0, 256, (32, 3))]
    uploads = [image_bytes(c) for c in colours]

    def worker(start: int) -> list[Any]:
        return [post_file(client, uploads[i]) for i in range(start, start + 4)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = [r for batch in pool.map(worker, range(0, 32, 4)) for r in batch]
    for colour, response in zip(colours, responses, strict=True):
        assert_good_prediction(response, colour)
    assert predictor.max_active == 1
