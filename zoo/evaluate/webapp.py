"""``zoo export RUN --format web``: an installable offline web app in ``runs/<run>/export/web/``.

The folder is static: the app's page and scripts (``zoo/evaluate/web/``), the run's ONNX export
(written and checked against PyTorch by ``export_run``), ``model.json`` (classes, preprocessing,
trust thresholds), a web manifest and icons, the onnxruntime-web WebAssembly runtime and a service
worker that caches all of it on the first visit, so the app then works with the network off.
Photos are prepared in the browser as ``zoo predict`` prepares them (``web/preprocess.js``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from zoo.data.cache import DRAFT_MARGIN
from zoo.errors import ZooError
from zoo.evaluate.export import ExportResult, export_run
from zoo.evaluate.export_files import MANIFEST, write_manifest
from zoo.evaluate.trust import export_trust
from zoo.models.runtime import Runtime
from zoo.store.runs import read_meta, run_dir

TEMPLATE = Path(__file__).parent / "web"
APP_FILES = ("index.html", "app.js", "preprocess.js", "pillow.js", "style.css")
# onnxruntime-web, pinned (package.json): the WebAssembly-only build, the smallest that runs the
# model (its WebGPU build adds a 21.7 MB .wasm). Each file is checked before it is copied.
ORT_WEB_VERSION = "1.20.1"
ORT_WEB_FILES = {
    "ort.wasm.min.mjs": "f53ed4792e758e7232f779d479eb8931b97ff3ab2e3b9a33ee00d1251ffdaad6",
    "ort-wasm-simd-threaded.mjs": "745eb7c0ce6f18a6aa521971b2877babc7ffb27eecb58ab3bc6e5ef4692672e8",
    "ort-wasm-simd-threaded.wasm": "207d02be4591c156b0a98f024f3d58005b5b04c92274d759fb390338c63559ea",
}
ORT_WEB_CACHE = Path.home() / ".cache" / "mineral-zoo" / "web"
ICON_SIZES = (192, 512)
THEME = "#1f4fbf"


@dataclass
class WebExport:
    folder: Path
    onnx: ExportResult
    first_load_bytes: int  # everything the service worker caches on the first visit


def ort_web_candidates() -> list[Path]:
    """Where the onnxruntime-web package is looked for, in order: ``ZOO_ORT_WEB``, this
    checkout's ``node_modules`` (``make install``), then ``~/.cache/mineral-zoo/web``."""
    checkout = Path(__file__).resolve().parents[2]
    places = [checkout / "node_modules" / "onnxruntime-web", ORT_WEB_CACHE / "node_modules" / "onnxruntime-web"]
    if os.environ.get("ZOO_ORT_WEB"):
        places.insert(0, Path(os.environ["ZOO_ORT_WEB"]).expanduser())
    return places


def _version(package: Path) -> str | None:
    try:
        return json.loads((package / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def find_ort_web() -> Path:
    """The ``dist`` folder of onnxruntime-web at the pinned version; else a ZooError that says
    how to install it."""
    found = []
    for package in ort_web_candidates():
        version = _version(package)
        if version == ORT_WEB_VERSION and all((package / "dist" / f).is_file() for f in ORT_WEB_FILES):
            return package / "dist"
        if version:
            found.append(f"{package} has version {version}")
    where = f" ({'; '.join(found)})" if found else ""
    raise ZooError(
        f"The web export needs onnxruntime-web {ORT_WEB_VERSION} from npm{where}. Install it with "
        f"`npm install --prefix {ORT_WEB_CACHE} onnxruntime-web@{ORT_WEB_VERSION}` (or `make install` "
        "in a checkout), or set ZOO_ORT_WEB to the package's folder.")


def _copy_checked(source: Path, target: Path, sha256: str) -> None:
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ZooError(f"{source} is not the file of onnxruntime-web {ORT_WEB_VERSION} (sha256 differs); "
                       f"reinstall it: `npm install --prefix {ORT_WEB_CACHE} onnxruntime-web@{ORT_WEB_VERSION}`.")
    target.write_bytes(data)


def web_trust(meta: dict) -> dict | None:
    """The thresholds for the app's confident / unsure / unknown status (``trustStatus`` in
    web/app.js), from the run's trust section (``zoo.evaluate.trust.export_trust``): the
    confidence threshold, and the one the exported output supports for unknown photos
    (``output_ood``: 1 - the top probability). None (no status shown, with a note) without one."""
    exported = export_trust(meta)
    if not exported:
        return None
    ood = exported.get("output_ood") or {}
    return {"confidence_threshold": exported["confidence_threshold"],
            "unknown_above": ood.get("threshold")}


def model_config(meta: dict, info: dict) -> dict:
    """model.json: what the page needs to feed the model and show its answer."""
    return {
        "run": meta["name"], "model": meta["model"], "classes": meta["classes"],
        "test_accuracy": info.get("test_accuracy"),
        "input": info["input"]["name"], "output": info["output"]["name"],
        "preprocessing": {"image_size": info["input"]["height"],
                          "resize_side": info["preprocessing"]["resize_side"],
                          "draft_margin": DRAFT_MARGIN},
        "trust": web_trust(meta), "onnxruntime_web": ORT_WEB_VERSION,
        "exported": info["exported"], "zoo_version": info["zoo_version"],
    }


def _icon(size: int) -> Image.Image:
    """A blue tile with a white cut gem."""
    img = Image.new("RGB", (size, size), THEME)
    draw = ImageDraw.Draw(img)
    s = size / 16
    draw.polygon([(4 * s, 6 * s), (6 * s, 3.5 * s), (10 * s, 3.5 * s), (12 * s, 6 * s), (8 * s, 13 * s)],
                 fill="white")
    draw.line([(4 * s, 6 * s), (12 * s, 6 * s)], fill=THEME, width=max(1, size // 48))
    return img


def web_manifest(run: str) -> dict:
    return {"name": f"Mineral Zoo ({run})", "short_name": "Minerals", "start_url": "./", "scope": "./",
            "display": "standalone", "background_color": "#f6f7f9", "theme_color": THEME,
            "description": "Identify minerals from photos, offline.",
            "icons": [{"src": f"icon-{n}.png", "sizes": f"{n}x{n}", "type": "image/png"} for n in ICON_SIZES]}


def _service_worker(folder: Path) -> str:
    """sw.js with the list of files to cache and a version that changes with any of them."""
    assets = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for name in assets:
        digest.update(name.encode() + hashlib.sha256((folder / name).read_bytes()).digest())
    template = (TEMPLATE / "sw.js").read_text(encoding="utf-8")
    return (template.replace("'__VERSION__'", json.dumps(digest.hexdigest()[:16]))
            .replace("__ASSETS__", json.dumps(["./", *assets])))


def _build(folder: Path, meta: dict, onnx: ExportResult, runtime_dir: Path) -> None:
    for name in APP_FILES:
        shutil.copyfile(TEMPLATE / name, folder / name)
    shutil.copyfile(onnx.path, folder / "model.onnx")
    (folder / "ort").mkdir()
    for name, sha256 in ORT_WEB_FILES.items():
        _copy_checked(runtime_dir / name, folder / "ort" / name, sha256)
    for size in ICON_SIZES:
        _icon(size).save(folder / f"icon-{size}.png", optimize=True)
    (folder / "manifest.webmanifest").write_text(json.dumps(web_manifest(meta["name"]), indent=1), encoding="utf-8")
    (folder / "model.json").write_text(json.dumps(model_config(meta, onnx.info), indent=1), encoding="utf-8")
    (folder / "sw.js").write_text(_service_worker(folder), encoding="utf-8")


def _replace_folder(built: Path, target: Path) -> None:
    """Put ``built`` where ``target`` is, the old one removed only once the new one is there."""
    old = target.with_name(f".{target.name}-old.tmp")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def export_web(run: str, home: Path | None = None, runtime: Runtime = Runtime()) -> WebExport:
    """Write runs/<run>/export/web/ (see the module docstring) and its list of files."""
    meta = read_meta(run_dir(run, home))
    if meta.get("kind") == "ensemble":
        members = meta.get("members") or ["RUN"]
        raise ZooError(f"'{run}' is an ensemble; the web app runs one model. Export a member instead, "
                       f"e.g. `zoo export {members[0]} --format web` (members: {', '.join(members)}).")
    runtime_dir = find_ort_web()
    onnx = export_run(run, "onnx", home, runtime)
    meta = read_meta(onnx.path.parents[1])
    target = onnx.path.parent / "web"
    built = Path(tempfile.mkdtemp(prefix=".web-", suffix=".tmp", dir=onnx.path.parent))
    built.chmod(0o755)  # mkdtemp makes it private; the app is for serving
    try:
        _build(built, meta, onnx, runtime_dir)
        write_manifest(built)
        _replace_folder(built, target)
    except OSError as exc:
        raise ZooError(f"Writing the web app into {target} failed: {exc}. Free some disk space or fix "
                       "the permissions and export again.") from exc
    finally:
        shutil.rmtree(built, ignore_errors=True)
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and p.name != MANIFEST)
    return WebExport(target, onnx, total)
