"""End-to-end: the `zoo serve` page in headless Chromium, served by uvicorn on loopback.

Needs Debian's Chromium at /usr/bin/chromium and the `playwright` Python package (no browser
download: Playwright drives the system Chromium). Set ZOO_DATA to a dataset folder to upload a
real photo; otherwise a generated image is used.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_serve_api import FakePredictor

from zoo.serve import create_app, run_in_thread

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")


def photo() -> dict[str, Any]:
    """A real photo from ZOO_DATA when set, else a generated orange-brown gradient."""
    data = os.environ.get("ZOO_DATA")
    if data and Path(data).is_dir():
        for path in sorted(Path(data).glob("*/*.jpg")):
            return {"name": path.name, "mimeType": "image/jpeg", "buffer": path.read_bytes()}
    ramp = np.linspace(0, 1, 96)[None, :, None]
    pixels = (np.array([200, 110, 40]) * (0.6 + 0.4 * ramp)).repeat(96, axis=0).astype(np.uint8)
    return {"name": "rock.png", "mimeType": "image/png", "buffer": png(pixels)}


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def base_url() -> str:
    with run_in_thread(create_app(FakePredictor())) as url:
        yield url


@pytest.fixture(scope="module")
def page(base_url: str) -> Any:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 760})
        page.set_default_timeout(10_000)
        yield page
        browser.close()


def test_upload_shows_top3_and_model(page: Any, base_url: str) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(base_url + "/")
    sync_api.expect(page.locator("#model-name")).to_have_text("fake-colour-1")
    sync_api.expect(page.locator("#model-accuracy")).to_contain_text("87.5%")

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file-input"

    page.locator("#file-input").set_input_files(photo())
    predictions = page.locator("#results .prediction")
    sync_api.expect(predictions).to_have_count(3)
    names = predictions.locator(".prediction-name").all_text_contents()
    assert sorted(names) == ["biotite", "pyrite", "quartz"]
    assert all(text.endswith("%") for text in predictions.locator(".prediction-prob").all_text_contents())
    sync_api.expect(page.locator("#status")).to_contain_text("fake-colour-1")
    sync_api.expect(page.locator("#preview")).to_be_visible()
    sync_api.expect(page.locator("#heatmap")).to_be_visible()
    assert page.locator("#heatmap").get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('heatmap').naturalWidth") > 0  # it decoded
    top = predictions.locator(".prediction-name").first.text_content()
    sync_api.expect(page.locator("#heatmap-caption")).to_contain_text(f"Where the model saw {top}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve.png"), full_page=True)
    assert all(url.startswith((base_url, "blob:", "data:")) for url in requested), requested


def test_low_confidence_note_and_errors(page: Any, base_url: str) -> None:
    page.goto(base_url + "/")
    grey = {"name": "grey.png", "mimeType": "image/png", "buffer": png(np.full((32, 32, 3), 128, np.uint8))}
    page.locator("#file-input").set_input_files(grey)
    sync_api.expect(page.locator("#results .prediction")).to_have_count(3)
    sync_api.expect(page.locator("#low-confidence")).to_be_visible()
    sync_api.expect(page.locator("#low-confidence")).to_contain_text("Not sure — top guesses are")

    notes = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}
    page.locator("#file-input").set_input_files(notes)
    sync_api.expect(page.locator("#error")).to_contain_text("Unreadable image")
    sync_api.expect(page.locator("#results .prediction")).to_have_count(0)
    sync_api.expect(page.locator("#heatmap-box")).to_be_hidden()
    sync_api.expect(page.locator("#low-confidence")).to_be_hidden()


def test_api_docs_render_with_local_assets_only(page: Any, base_url: str) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(base_url + "/docs")
    sync_api.expect(page.locator(".swagger-ui .info .title")).to_contain_text("mineral-zoo")
    sync_api.expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert "/api/predict" in page.locator(".swagger-ui").inner_text()
    assert requested and all(url.startswith((base_url, "data:")) for url in requested), requested


class TrustingPredictor(FakePredictor):
    """The fake model with trust thresholds: grey photos are 'unknown' (OOD score 2 > 1)."""

    name = "fake-trust-1"

    def predict_rows(self, images: list[Image.Image]) -> np.ndarray:
        probs = self.predict_proba(images)
        spread = np.array([np.ptp(np.asarray(img).reshape(-1, 3).mean(0)) for img in images])
        return np.hstack([probs, np.where(spread < 5, 2.0, 0.0)[:, None]])

    def judge(self, probs: np.ndarray, ood: np.ndarray | None) -> list[dict]:
        from zoo.evaluate.trust import Trust

        return Trust(0.95, 0.6, ood_threshold=1.0, ood_method="knn").judge(probs, ood, self.classes)


def test_page_states_status_candidates_and_known_minerals(page: Any) -> None:
    with run_in_thread(create_app(TrustingPredictor())) as url:
        page.goto(url + "/")
        sync_api.expect(page.locator("#known")).to_contain_text("This model knows 3 minerals: biotite")
        red = {"name": "red.png", "mimeType": "image/png",
               "buffer": png(np.full((32, 32, 3), (250, 5, 5), np.uint8))}
        page.locator("#file-input").set_input_files(red)
        sync_api.expect(page.locator("#verdict")).to_have_text("This is biotite (95.4% sure).")
        orange = {"name": "orange.png", "mimeType": "image/png",
                  "buffer": png(np.full((32, 32, 3), (200, 120, 20), np.uint8))}
        page.locator("#file-input").set_input_files(orange)
        sync_api.expect(page.locator("#verdict")).to_contain_text("Not sure: it could be biotite, pyrite or quartz")
        grey = {"name": "grey.png", "mimeType": "image/png",
                "buffer": png(np.full((32, 32, 3), 128, np.uint8))}
        page.locator("#file-input").set_input_files(grey)
        sync_api.expect(page.locator("#verdict")).to_contain_text("does not look like any of the minerals")
        sync_api.expect(page.locator("#results .prediction")).to_have_count(3)
        sync_api.expect(page.locator("#low-confidence")).to_be_hidden()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-unknown.png"), full_page=True)
