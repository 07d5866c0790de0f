"""What one client can cost `zoo serve`: photos that explode once decoded, silent or trickling
connections, slow uploads, many decodes at once; and /docs working with no network. A real
uvicorn serves the app on 127.0.0.1 (zoo.serve.run_in_thread) with short limits."""
from __future__ import annotations

import re
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from test_serve_api import FakePredictor, image_bytes

import zoo.serve.app as serve_app
from tests.helpers_badfiles import png_chunks
from zoo.serve import create_app, run_in_thread

LIMIT = 1.0  # seconds for headers and for the body in these tests


@pytest.fixture(scope="module")
def url() -> str:
    app = create_app(FakePredictor(), max_upload_bytes=200_000, body_timeout=LIMIT)
    with run_in_thread(app, headers_timeout=LIMIT, limit_concurrency=50) as base:
        yield base


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_after(sock: socket.socket) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock``, and what it sent before closing."""
    start, got = time.monotonic(), b""
    while chunk := sock.recv(4096):
        got += chunk
    return time.monotonic() - start, got


def _healthy(url: str) -> bool:
    return httpx.get(url + "/healthz", timeout=10).status_code == 200


def test_silent_connection_is_dropped(url: str) -> None:
    with _connect(url) as sock:
        waited, got = _closed_after(sock)
    assert got == b"" and LIMIT * 0.8 <= waited < LIMIT + 3


def test_headers_sent_a_byte_at_a_time_are_cut_off(url: str) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    start = time.monotonic()
    with _connect(url) as sock:
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:  # the server closed the connection: what it should do
            pass
        _closed_after(sock)
    assert time.monotonic() - start < LIMIT + 3


def test_half_open_connections_free_their_slots(url: str) -> None:
    """The concurrency limit (50 here) holds while half-open clients stay, and frees itself."""
    socks = [_connect(url) for _ in range(60)]
    try:
        assert httpx.get(url + "/healthz", timeout=10).status_code == 503
        time.sleep(LIMIT + 1.5)
        assert _healthy(url)
    finally:
        for sock in socks:
            sock.close()


def test_slow_upload_gets_408(url: str) -> None:
    head = (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n")
    with _connect(url) as sock:
        sock.sendall(head)
        waited, got = _closed_after(sock)
    assert got.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 seconds" in got
    assert waited < LIMIT + 3
    assert _healthy(url)


def test_thin_and_16_bit_photos(url: str) -> None:
    thin = png_chunks(100_000, 1, 8, 0, b"\x00" + b"\x80" * 100_000)
    response = httpx.post(url + "/api/predict", files={"file": ("thin.png", thin)}, timeout=30)
    assert response.status_code == 400 and "longer than 20:1" in response.json()["detail"]
    side = 3_000
    deep = png_chunks(side, side, 16, 2, (b"\x00" + struct.pack(">HHH", 0, 0, 65535) * side) * side)
    response = httpx.post(url + "/api/predict", files={"file": ("deep.png", deep)}, timeout=60)
    assert response.status_code == 200 and response.json()["predictions"][0]["class"] == "quartz"


def test_decodes_at_once_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    active, peak, lock = 0, 0, threading.Lock()
    real = serve_app.decode_array

    def slow_decode(data: bytes, side: int) -> np.ndarray:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        return real(data, side)

    monkeypatch.setattr(serve_app, "decode_array", slow_decode)
    with run_in_thread(create_app(FakePredictor(), max_decodes=2)) as base:
        def post(_: int) -> int:
            files = {"file": ("a.png", image_bytes((10, 20, 30)))}
            return httpx.post(base + "/api/predict", files=files, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(post, range(8))) == [200] * 8
    assert peak == 2


def test_docs_use_only_local_assets(url: str) -> None:
    page = httpx.get(url + "/docs", timeout=10)
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text) and "cdn" not in page.text
    for asset in re.findall(r"(?:src|href)=\"(/[^\"]+)\"", page.text):
        assert httpx.get(url + asset, timeout=10).status_code == 200, asset
    assert httpx.get(url + "/redoc", timeout=10).status_code == 404
    assert httpx.get(url + "/openapi.json", timeout=10).json()["info"]["title"] == "mineral-zoo"
