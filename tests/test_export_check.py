"""`zoo export --check`: every export folder against its files.json (names, sizes, sha256)."""
from __future__ import annotations

import pytest
from helpers_eval import invoke, private_copy

from zoo.evaluate import webapp

pytest.importorskip("onnx")  # the optional `export` extra


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


def test_check_finds_changed_missing_and_extra_files(zoo_copy):
    assert invoke(["export", "tiny", "--format", "onnx"]).exit_code == 0
    assert invoke(["export", "tiny", "--format", "torchscript"]).exit_code == 0
    export = zoo_copy.home / "tiny" / "export"
    res = invoke(["export", "tiny", "--check"])
    assert res.exit_code == 0, res.said
    assert "ok" in res.said and "2 files checked" in res.said

    with open(export / "model.onnx", "r+b") as fp:  # one flipped byte, same size
        fp.seek(100)
        byte = fp.read(1)
        fp.seek(100)
        fp.write(bytes([byte[0] ^ 1]))
    (export / "model.torchscript.pt").unlink()
    (export / "notes.txt").write_text("left here by hand")
    res = invoke(["export", "tiny", "--check"])
    assert res.exit_code == 2
    assert "model.onnx: content changed (sha256 differs)" in res.said
    assert "model.torchscript.pt: missing" in res.said
    assert "notes.txt: not part of the export" in res.said
    assert "Export it again" in res.said and "Traceback" not in res.said


def test_check_without_an_export_says_what_to_do(zoo_copy):
    res = invoke(["export", "tiny", "--check"])
    assert res.exit_code == 2
    assert "Nothing exported yet" in res.said and "zoo export tiny --format onnx" in res.said


def test_web_export_of_an_ensemble_names_its_members(zoo_copy):
    res = invoke(["export", "duo", "--format", "web"])
    assert res.exit_code == 2
    assert "the web app runs one model" in res.said and "zoo export tiny --format web" in res.said


def test_web_export_without_onnxruntime_web_says_how_to_install_it(zoo_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(webapp, "ort_web_candidates", lambda: [tmp_path / "nowhere"])
    res = invoke(["export", "tiny", "--format", "web"])
    assert res.exit_code == 2
    assert f"npm install --prefix {webapp.ORT_WEB_CACHE} onnxruntime-web@{webapp.ORT_WEB_VERSION}" in res.said
    assert not (zoo_copy.home / "tiny" / "export").exists()  # refused before anything was written
