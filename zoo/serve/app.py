"""Web app for `zoo serve`: one page to identify a mineral from a photo, plus a small JSON API.

The predictor is loaded once and shared by every request. Images are decoded in the threadpool
as `zoo predict` decodes them, at most `max_decodes` at a time (each may take up to ~0.9 GB); an
unreadable photo fails its own request only. Decoded photos of requests arriving within
`batch_wait_ms` of each other then go through the model together (`zoo.serve.batching`: one
`predict_proba` call for up to `max_batch` photos, the only caller of the model for predictions).
`?explain=true` adds a Grad-CAM overlay of the top class, computed after the prediction one
photo at a time (`zoo.report.heatmaps`). Slow or silent clients are cut off (see
`server_config`), and /docs serves Swagger UI from a local copy, never a CDN.
"""
from __future__ import annotations

import asyncio
import functools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

import anyio
import h11
import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile
from swagger_ui_bundle import swagger_ui_path
from uvicorn.protocols.http.h11_impl import H11Protocol

from pydantic import BaseModel, Field

from zoo.data.cache import decode_array
from zoo.errors import UnreadableImageError, ZooError
from zoo.evaluate.predictor import top_k
from zoo.evaluate.trust import message
from zoo.report.heatmaps import data_url, overlay
from zoo.serve.batching import MicroBatcher

STATIC_DIR = Path(__file__).parent / "static"
TOP_K = 3
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# Photos decoded at once: a photo at the pixel limit takes up to ~0.9 GB while it is decoded (a
# 64-megapixel PNG with transparency), so two keep a busy server under 2 GB over the model,
# however many large uploads arrive together. Decoded, it is small (shorter side `decode_side`).
MAX_DECODES = 2
# Micro-batching: at most this many photos per forward pass, and how long the first photo of a
# batch waits for others to join it.
MAX_BATCH = 32
BATCH_WAIT_MS = 5.0
# Seconds a client has to send its request line and headers (from connecting, or from the end
# of its previous response), and then the body: silent or trickling clients are cut off.
HEADERS_TIMEOUT = 10.0
BODY_TIMEOUT = 60.0
# Open connections served at once; past this, requests get 503 until others finish.
MAX_CONNECTIONS = 100
MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE_SECONDS = 5
DOCS_ASSETS = "/docs-assets"
# /docs may only load what this server sends: Swagger UI's inline start-up script and styles, and
# its bundle from DOCS_ASSETS.
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:",
}
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
EXPLAIN_QUERY = Query(False, description="Also return `heatmap`: a `data:image/png;base64,...` URL of "
                      "the photo (at its decoded size) with the Grad-CAM heat map of the top class over it.")


class ClassProbability(BaseModel):
    class_: str = Field(alias="class")
    probability: float


class PredictResponse(BaseModel):
    """`POST /api/predict`. `status`, `ood_score` and `candidates` are absent for a run trained
    before trust thresholds existed."""

    predictions: list[ClassProbability] = Field(description="The top 3 classes, most probable first.")
    model: str
    latency_ms: float
    status: Optional[Literal["confident", "unsure", "unknown"]] = Field(
        None, description="confident: the top class, as sure as the run's target precision "
                          "(validation) allows; unsure: one of `candidates`; unknown: the photo "
                          "does not look like any class this model knows.")
    confidence: float = Field(description="Calibrated probability of the top class.")
    ood_score: Optional[float] = Field(
        None, description="How unlike the training photos this photo is (higher: stranger); "
                          "beyond the run's OOD threshold the status is unknown.")
    candidates: Optional[list[str]] = Field(
        None, description="The answer (confident), or the two or three most likely classes.")
    message: Optional[str] = Field(None, description="The status in plain words.")
    heatmap: Optional[str] = Field(
        None, description="With `?explain=true`: a `data:image/png;base64,...` URL of the photo "
                          "with the Grad-CAM heat map of the top class over it.")


class Predictor(Protocol):
    """What the app needs from `zoo.evaluate.predictor.load_predictor(...)`."""

    name: str
    classes: list[str]
    decode_side: int  # photos are decoded with their shorter side this long

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray: ...

    def heatmaps(self, arrays: list[np.ndarray], targets: list[int]) -> list[np.ndarray]: ...

    def info(self) -> dict[str, Any]: ...


def create_app(predictor: Predictor, max_upload_bytes: int = 10 * 1024 * 1024,
               body_timeout: float = BODY_TIMEOUT, max_decodes: int = MAX_DECODES,
               max_batch: int = MAX_BATCH, batch_wait_ms: float = BATCH_WAIT_MS,
               web_app: Path | None = None) -> FastAPI:
    """Build the FastAPI app serving `predictor`: uploads above `max_upload_bytes` get 413, a
    body that takes longer than `body_timeout` seconds to arrive 408, an unreadable photo 400.
    Photos are predicted in batches of up to `max_batch` (1: one at a time), each waiting at
    most `batch_wait_ms` for others; the batcher runs during the app's lifespan. `web_app`, the
    run's `zoo export --format web` folder, is served at /app when it exists."""
    # Predictors with trust thresholds give one row per photo: probabilities, then the OOD score.
    rows = getattr(predictor, "predict_rows", None)
    batcher = MicroBatcher(rows or predictor.predict_proba, max_batch, batch_wait_ms)
    app = FastAPI(
        title="mineral-zoo",
        summary=f"Identify minerals from photos with the model {predictor.name}.",
        docs_url=None,
        redoc_url=None,
        lifespan=lambda _: batcher.running(),
    )
    info = predictor.info()
    decodes = threading.BoundedSemaphore(max_decodes)
    explaining = threading.Lock()  # one Grad-CAM at a time beside the batcher's forward passes

    def decode(data: bytes) -> Image.Image:
        with decodes:
            try:
                return Image.fromarray(decode_array(data, predictor.decode_side))
            except UnreadableImageError as exc:
                raise HTTPException(status_code=400, detail=f"Unreadable image: {exc}") from exc

    def explain_photo(image: Image.Image, target: int) -> str:
        with explaining:
            try:
                heat = predictor.heatmaps([np.asarray(image)], [target])[0]
            except ZooError as exc:  # a model without a convolutional feature map
                raise HTTPException(status_code=501, detail=str(exc)) from exc
            return data_url(overlay(image, heat))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/model")
    def model_info() -> dict[str, Any]:
        return info

    @app.post("/api/predict", openapi_extra=PREDICT_BODY_SCHEMA, response_model=PredictResponse,
              response_model_exclude_none=True, response_model_by_alias=True)
    async def predict(request: Request, explain: bool = EXPLAIN_QUERY) -> dict[str, Any]:
        """Top-3 classes for the photo sent as multipart/form-data in the field `file`."""
        try:
            with anyio.fail_after(body_timeout):
                data = await _read_upload(request, max_upload_bytes)
        except TimeoutError as exc:
            raise HTTPException(status_code=408, headers={"Connection": "close"},
                                detail=f"Upload too slow: the photo did not arrive within "
                                       f"{body_timeout:g} seconds.") from exc
        start = time.perf_counter()
        image = await run_in_threadpool(decode, data)
        row = await batcher.predict(image)
        probs = row[:len(predictor.classes)]
        heatmap = {}
        if explain:
            heatmap["heatmap"] = await run_in_threadpool(explain_photo, image, int(probs.argmax()))
        return {
            "predictions": [{"class": c, "probability": p}
                            for c, p in top_k(probs[None], predictor.classes, TOP_K)[0]],
            "model": predictor.name,
            "latency_ms": (time.perf_counter() - start) * 1000.0,
            **_verdict(predictor, probs, row[len(predictor.classes):]),
            **heatmap,
        }

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url, title="mineral-zoo API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})  # no badge from validator.swagger.io
        page.headers.update(DOCS_HEADERS)
        return page

    _mount_web_app(app, web_app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")
    return app


def _verdict(predictor: Predictor, probs: np.ndarray, extra: np.ndarray) -> dict[str, Any]:
    """Status, confidence, OOD score, candidates and message of one photo (`zoo.evaluate.trust`);
    the confidence alone for a predictor without trust thresholds."""
    judge = getattr(predictor, "judge", None)
    ood = extra[:1].astype(np.float32) if len(extra) else None
    verdicts = judge(probs[None], ood) if judge is not None else None
    if not verdicts:
        return {"confidence": float(np.max(probs))}
    v = verdicts[0]
    return {**v, "message": message(v, predictor.classes)}


def _mount_web_app(app: FastAPI, folder: Path | None) -> None:
    """The offline web app at /app/ (a static folder: its own page, scripts, model and service
    worker), or a page saying how to make it."""
    if folder is not None and (folder / "index.html").is_file():
        app.mount("/app", StaticFiles(directory=folder, html=True), name="app")
        return

    @app.get("/app", include_in_schema=False)
    @app.get("/app/{path:path}", include_in_schema=False)
    def no_web_app(path: str = "") -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>No offline app</title><p>This run has no offline web app yet. "
            "Run <code>zoo export RUN --format web</code>, then start <code>zoo serve</code> again.</p>",
            status_code=404, headers=PAGE_HEADERS)


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


class _DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus what it lacks: a deadline for each request's line and
    headers. A client that connects and sends nothing, or its headers a byte at a time, is cut
    off after `headers_timeout` seconds instead of holding a connection forever."""

    def __init__(self, *args: Any, headers_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers_timeout = headers_timeout
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.loop.call_later(self.headers_timeout, self._expire)

    def _expire(self) -> None:
        """Close the connection if its request's headers are still incomplete."""
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000,
                  headers_timeout: float = HEADERS_TIMEOUT, **settings: Any) -> uvicorn.Config:
    """uvicorn settings that bound what one client can hold: time to send the headers, idle
    keep-alive, header size, and open connections (more get 503). `settings` override those
    or add other `uvicorn.Config` settings."""
    limits = {"timeout_keep_alive": KEEP_ALIVE_SECONDS, "limit_concurrency": MAX_CONNECTIONS,
              "h11_max_incomplete_event_size": MAX_HEADER_BYTES}
    protocol = functools.partial(_DeadlineProtocol, headers_timeout=headers_timeout)
    return uvicorn.Config(app, host=host, port=port, http=protocol, **{**limits, **settings})


def serve(predictor: Predictor, host: str = "127.0.0.1", port: int = 8000, ssl_certfile: Path | None = None,
          ssl_keyfile: Path | None = None, **app_settings: Any) -> None:
    """Serve the page and API for `predictor` until interrupted, over https with a certificate
    and key; `app_settings` go to `create_app` (`max_batch`, `batch_wait_ms`, `web_app`, ...)."""
    tls = {"ssl_certfile": str(ssl_certfile), "ssl_keyfile": str(ssl_keyfile)} if ssl_certfile else {}
    uvicorn.Server(server_config(create_app(predictor, **app_settings), host, port, **tls)).run()


@contextmanager
def run_in_thread(app: FastAPI, host: str = "127.0.0.1", **settings: Any) -> Iterator[str]:
    """Serve `app` from this process: uvicorn in a background thread on a free port of `host`.

    Yields the base URL once the server accepts requests and stops it on exit. For callers that
    build their own app around a predictor (benchmarks/serve_load.py, tests).
    The limits are those of `server_config`, which `settings` go to.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, host, port, **{"log_level": "warning", **settings}))
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
