"""Web app for `zoo serve`: one page to identify a mineral from a photo, plus a small JSON API.

The predictor is loaded once and shared by every request. Images are decoded in the threadpool,
and forward passes are serialised with a lock: on a few CPU cores concurrent passes gain nothing
and some models are not safe to call from several threads at once.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile

from zoo.data.imaging import load_image
from zoo.errors import UnreadableImageError
from zoo.evaluate.predictor import top_k

STATIC_DIR = Path(__file__).parent / "static"
TOP_K = 3
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# The page may only use what this server sends (no CDN); previews are blob: URLs.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
}
PREDICT_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


class Predictor(Protocol):
    """What the app needs from `zoo.evaluate.predictor.load_predictor(...)`."""

    name: str
    classes: list[str]

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...


def create_app(predictor: Predictor, max_upload_bytes: int = 10 * 1024 * 1024) -> FastAPI:
    """Build the FastAPI app serving `predictor`; uploads above `max_upload_bytes` get 413."""
    app = FastAPI(
        title="mineral-zoo",
        summary=f"Identify minerals from photos with the model {predictor.name}.",
    )
    info = predictor.info()
    lock = threading.Lock()

    def predict_bytes(data: bytes) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            image = load_image(data)
        except UnreadableImageError as exc:
            raise HTTPException(status_code=400, detail=f"Unreadable image: {exc}") from exc
        with lock:
            probs = np.asarray(predictor.predict_proba([image]), dtype=float)
        return {
            "predictions": [{"class": c, "probability": p}
                            for c, p in top_k(probs, predictor.classes, TOP_K)[0]],
            "model": predictor.name,
            "latency_ms": (time.perf_counter() - start) * 1000.0,
        }

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/model")
    def model_info() -> dict[str, Any]:
        return info

    @app.post("/api/predict", openapi_extra=PREDICT_BODY_SCHEMA)
    async def predict(request: Request) -> dict[str, Any]:
        """Top-3 classes for the photo sent as multipart/form-data in the field `file`."""
        data = await _read_upload(request, max_upload_bytes)
        return await run_in_threadpool(predict_bytes, data)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _read_upload(request: Request, max_upload_bytes: int) -> bytes:
    """The bytes of the form field `file`, refusing bodies that are too big before reading them."""
    too_big = HTTPException(
        status_code=413,
        detail=f"Upload too large: the limit is {max_upload_bytes} bytes. Send a smaller photo.",
    )
    body_limit = max_upload_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise too_big
    body = await _read_body(request, body_limit, too_big)
    if not body:
        raise HTTPException(status_code=400, detail="Empty request: send a photo in the form field 'file'.")
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(
            status_code=415,
            detail="Send the photo as multipart/form-data in the form field 'file'.",
        )
    form = await _replayed(request, body).form(max_files=1, max_fields=16)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(status_code=422, detail="Missing form field 'file' holding the photo.")
        data = await upload.read(max_upload_bytes + 1)
    finally:
        await form.close()
    if len(data) > max_upload_bytes:
        raise too_big
    if not data:
        raise HTTPException(status_code=400, detail="The uploaded file is empty.")
    return data


async def _read_body(request: Request, limit: int, too_big: HTTPException) -> bytes:
    """Read the request body, stopping as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _replayed(request: Request, body: bytes) -> Request:
    """A copy of `request` whose body is `body` (already read), so Starlette can parse the form."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


def serve(predictor: Predictor, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the page and API for `predictor` until interrupted."""
    uvicorn.run(create_app(predictor), host=host, port=port)


@contextmanager
def run_in_thread(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` from this process: uvicorn in a background thread on a free port of `host`.

    Yields the base URL once the server accepts requests and stops it on exit. For callers that
    build their own app around a predictor without a run (benchmarks/serve_load.py --fake, tests).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The server on {host}:{port} did not start.")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        sock.close()
