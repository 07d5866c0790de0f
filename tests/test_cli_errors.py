"""CLI mistakes end in a clear message and a non-zero exit, never a traceback: unknown run
names, bad --members, missing data, an unusable run root, run names that try to leave the run
root, and (last line of defence) any unexpected exception."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_dataset
from zoo.cli import app, crash_log, main

TINY_SETS = ["--set", "data.image_size=32", "--set", "train.epochs=1", "--set", "data.batch_size=8"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private zoo with one tiny trained run ``tiny`` (and its copy ``tiny2``)."""
    root = tmp_path_factory.mktemp("cli")
    data = make_dataset(root / "photos", per_class=6)
    (data / "azurite" / "notes.jpg").write_text("not a photo")
    env = {"ZOO_HOME": str(root / "runs"), "ZOO_SPLITS_DIR": str(root / "splits"),
           "ZOO_DATA": str(data), "HF_HUB_OFFLINE": "1", "COLUMNS": "1000",
           "XDG_CACHE_HOME": str(root / "xdg")}
    args = ["train", "custom_cnn", *TINY_SETS, "--quiet", "--name", "tiny"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    twin = root / "runs" / "tiny2"
    shutil.copytree(root / "runs" / "tiny", twin)
    meta = json.loads((twin / "meta.json").read_text())
    (twin / "meta.json").write_text(json.dumps({**meta, "name": "tiny2"}))
    return env


def zoo(env: dict[str, str], *args: str, **extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={**env, **extra})
    output = " ".join(result.output.split())
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, output


@pytest.fixture(scope="module")
def photo(env) -> str:
    return str(next((Path(env["ZOO_DATA"]) / "pyrite").iterdir()))


def test_skipped_files_are_in_the_run_record(env):
    meta = json.loads((Path(env["ZOO_HOME"]) / "tiny" / "meta.json").read_text())
    assert any("azurite/notes.jpg" in n and "not an image" in n for n in meta["notes"])


@pytest.mark.parametrize("args", [
    ["serve", "tinyy"], ["predict", "tinyy", "PHOTO"], ["evaluate", "tinyy"], ["export", "tinyy"],
    ["report", "tinyy"], ["ensemble", "--members", "tiny,tinyy"],
])
def test_unknown_run_suggests_close_names(env, photo, args):
    code, output = zoo(env, *[photo if a == "PHOTO" else a for a in args])
    assert code == 2 and "No run named 'tinyy'" in output and "Did you mean: tiny" in output


@pytest.mark.parametrize("members,expected", [
    ("tiny", "at least 2 members, got 1"),
    ("tiny,tiny", "lists tiny more than once"),
    ("tiny,tiny2,tiny", "lists tiny more than once"),
    (" , ", "at least 2 members, got 0"),
])
def test_bad_members_are_refused(env, members, expected):
    code, output = zoo(env, "ensemble", "--members", members)
    assert code == 2 and expected in output


@pytest.mark.parametrize("args", [
    ["data", "check", "--data", "MISSING"],
    ["train", "custom_cnn", *TINY_SETS, "--data", "MISSING"],
    ["evaluate", "tiny", "--data", "MISSING"],
])
def test_missing_data_folder(env, tmp_path, args):
    missing = str(tmp_path / "nowhere")
    code, output = zoo(env, *[missing if a == "MISSING" else a for a in args])
    assert code == 2 and "not found" in output and missing in output


def test_data_path_that_is_a_file(env, photo):
    code, output = zoo(env, "data", "check", "--data", photo)
    assert code == 2 and photo in output


@pytest.mark.parametrize("args", [
    ["leaderboard"],
    ["train", "custom_cnn", *TINY_SETS, "--quiet"],
])
def test_run_root_that_is_a_file(env, tmp_path, args):
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    code, output = zoo(env, *args, ZOO_HOME=str(home), ZOO_SPLITS_DIR=str(tmp_path / "splits"))
    assert code == 2 and f"{home}" in output
    assert "is a file, not a folder" in output or "ZOO_HOME must be a writable folder" in output


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_run_root(env, tmp_path):
    home = tmp_path / "ro"
    home.mkdir(mode=0o555)
    code, output = zoo(env, "train", "custom_cnn", *TINY_SETS, "--quiet", ZOO_HOME=str(home))
    assert code == 2 and "Permission denied" in output and str(home) in output


ESCAPES = ["../x", "..", "/tmp/zoo-escape-check", "a/../../b", "tiny/../../x",
           "~root", "tiny\n", ".hidden"]


@pytest.mark.parametrize("name", ESCAPES)
@pytest.mark.parametrize("command", [
    ["predict", "NAME", "PHOTO"], ["serve", "NAME"], ["evaluate", "NAME"], ["export", "NAME"],
    ["report", "NAME"], ["ensemble", "--members", "tiny,NAME"],
    ["ensemble", "--members", "tiny,tiny2", "--name", "NAME"],
])
def test_run_names_cannot_leave_the_run_root(env, photo, command, name):
    args = [photo if a == "PHOTO" else a.replace("NAME", name) for a in command]
    code, output = zoo(env, *args)
    stripped = "," in args[-1] and name.strip() == "tiny"  # --members a,b strips spaces
    assert code == 2 and ("Invalid run name" in output or stripped), output
    assert not (Path(env["ZOO_HOME"]).parent / "x").exists() and not Path("/tmp/zoo-escape-check").exists()


@pytest.mark.parametrize("flag", ["--name", "--resume"])
@pytest.mark.parametrize("name", ["../escaped", "/tmp/zoo-escape-check"])
def test_train_names_cannot_leave_the_run_root(env, flag, name):
    sets = TINY_SETS if flag == "--name" else []  # --resume refuses --set
    code, output = zoo(env, "train", "custom_cnn", *sets, flag, name, "--quiet")
    assert code == 2 and "Invalid run name" in output
    home = Path(env["ZOO_HOME"])
    assert not (home.parent / "escaped").exists() and not Path(name).exists()


@pytest.mark.parametrize("args,expected", [
    (["leaderboard", "--sort", "bogus"], "Cannot sort by 'bogus'"),
    (["leaderboard", "--format", "xml"], "Unknown --format 'xml'"),
])
def test_bad_leaderboard_options(env, args, expected):
    code, output = zoo(env, *args)
    assert code == 2 and expected in output


def _run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["zoo", *args])
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, " ".join((captured.out + captured.err).split())


def test_unexpected_exception_is_a_short_message_with_a_log(env, monkeypatch, capsys, tmp_path):
    import zoo.store.leaderboard

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(zoo.store.leaderboard, "rows", boom)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("ZOO_HOME", env["ZOO_HOME"])
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    code, output = _run_main(monkeypatch, capsys, "leaderboard")
    assert code == 1
    assert "unexpected RuntimeError: simulated bug" in output and "ZOO_DEBUG=1" in output
    assert "Traceback" not in output and str(crash_log()) in output
    assert "Traceback" in crash_log().read_text() and "simulated bug" in crash_log().read_text()
    monkeypatch.setenv("ZOO_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["zoo", "leaderboard"])
    with pytest.raises(RuntimeError, match="simulated bug"):
        main()


def test_user_error_through_main_exits_2(env, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_HOME", env["ZOO_HOME"])
    code, output = _run_main(monkeypatch, capsys, "serve", "tinyy")
    assert code == 2 and output.startswith("error: No run named 'tinyy'")


def test_default_run_names_are_always_valid(tmp_path):
    from zoo.store.runs import check_run_name, new_run_name

    for model in ("hf-hub:timm/resnet18.a1_in1k", "../../x", "résnet 50", "...", "a" * 300):
        assert check_run_name(new_run_name(model, tmp_path)) == new_run_name(model, tmp_path)
    assert new_run_name("hf-hub:timm/resnet18", tmp_path) == "hf-hub_timm_resnet18-1"
