"""``train.distill``: a finished run or ensemble teaches a student on the student's own batches.
The teacher's view of a batch is re-normalised and resized for it; the loss is Hinton's; a
run teaches whether it is a model or an ensemble; teachers of another split and recipes that
cannot distill are refused; an interrupted student resumes exactly where it would have been."""
from __future__ import annotations

import dataclasses
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_training import SIZE, tiny_trainer
from test_resume import _wait_for_epoch, _zoo

from tests.helpers_cli import private_zoo, zoo
from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import eval_array, to_tensor
from zoo.errors import ZooError
from zoo.evaluate.predictor import load_predictor
from zoo.models.factory import build_model, preprocessing_of
from zoo.store.leaderboard import rows
from zoo.store.runs import load_predictions
from zoo.train.distill import Teacher, adapt, distillation_loss
from zoo.train.recipes import load_recipe

TINY = ["--set", "data.image_size=32", "--set", "data.batch_size=8", "--set", "model.kwargs.widths=[8,16]",
        "--quiet"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A private zoo with tiny custom_cnn runs ``a`` and ``b`` and their soft vote ``ab``."""
    with private_zoo(tmp_path_factory.mktemp("distill"), [*TINY, "--set", "train.epochs=2"],
                     {"a": 0, "b": 1}) as runs:
        code, said = zoo("ensemble", "--members", "a,b", "--method", "soft", "--name", "ab")
        assert code == 0, said
        yield runs


def test_adapt_renormalises_and_resizes() -> None:
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    half = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    imagenet = Preprocessing(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = to_tensor(photos, half)
    assert adapt(x, half, half) is x
    torch.testing.assert_close(adapt(x, half, imagenet), to_tensor(photos, imagenet), rtol=0, atol=1e-5)
    assert adapt(x, half, Preprocessing(48, half.mean, half.std)).shape == (2, 3, 48, 48)


def test_the_loss_is_zero_when_the_student_agrees_and_scales_with_t_squared() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
    assert distillation_loss(logits, F.log_softmax(logits, 1), 3.0).item() == pytest.approx(0, abs=1e-6)
    teacher = F.log_softmax(torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]]), 1)
    kl = F.kl_div(F.log_softmax(logits / 2, 1), F.log_softmax(teacher / 2, 1), reduction="batchmean",
                  log_target=True)
    assert distillation_loss(logits, teacher, 2.0).item() == pytest.approx(4 * kl.item())


@pytest.mark.parametrize("name", ["a", "ab"])
def test_the_teacher_gives_what_predict_gives(home: Path, name: str) -> None:
    """On a student batch normalised otherwise, the teacher's probabilities are the run's or
    ensemble's uncalibrated ones (``raw_proba``) on the same photos."""
    predictor = load_predictor(name, home)
    pre = (predictor.members[0] if name == "ab" else predictor).pre
    student = dataclasses.replace(pre, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (40, 45, 3), dtype=np.uint8) for _ in range(5)]
    x = to_tensor([eval_array(p, student) for p in photos], student)
    taught = Teacher(predictor, student).log_probs(x).exp().numpy()
    np.testing.assert_allclose(taught, predictor.raw_proba(photos), atol=1e-5)


def test_the_training_loss_mixes_labels_and_teacher(home: Path) -> None:
    pre = preprocessing_of(build_model("custom_cnn", 3, widths=(8, 16, 32)), SIZE)
    teacher = Teacher(load_predictor("ab", home), pre)
    trainer = tiny_trainer({"epochs": 1, "distill": {"teacher": "ab", "weight": 0.3, "temperature": 2.0}},
                           teacher=teacher)
    stage = trainer.finetune_stage()
    assert stage.teacher is teacher
    opt = trainer.optimizer_for(stage)
    sched = trainer.scheduler_for(opt, 10)
    x, y = batch = next(stage.batches(0))
    trainer._set_modes(stage)
    torch.manual_seed(1)
    logits = stage.forward(x).float()
    taught = distillation_loss(logits, teacher.log_probs(x), 2.0)
    assert taught.item() > 0.01  # the untrained student disagrees with its teacher
    expected = 0.7 * trainer.loss_fn(logits, y) + 0.3 * taught
    torch.manual_seed(1)
    assert trainer.train_step(stage, batch, opt, sched) == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ZooError, match="go together"):
        tiny_trainer({"epochs": 1, "distill": {"teacher": "ab"}})


@pytest.mark.parametrize("teacher", ["a", "ab"])
def test_a_model_or_an_ensemble_teaches(home: Path, teacher: str) -> None:
    name = f"student-{teacher}"
    code, said = zoo("train", "custom_cnn", *TINY, "--set", "train.epochs=2", "--set",
                     f"train.distill.teacher={teacher}", "--set", "train.distill.temperature=2", "--name", name)
    assert code == 0, said
    meta = json.loads((home / name / "meta.json").read_text())
    models = ["a", "b"] if teacher == "ab" else ["a"]
    assert meta["distill"] == {"teacher": teacher, "kind": "ensemble" if teacher == "ab" else "model",
                               "models": models, "weight": 0.5, "temperature": 2.0}
    assert meta["status"] == "finished" and name in {r["name"] for r in rows(home)}
    assert len(load_predictions(home / name, "test")["ids"]) > 0


def test_teachers_that_cannot_teach_are_refused(home: Path) -> None:
    before = sorted(p.name for p in home.iterdir())
    code, said = zoo("train", "custom_cnn", *TINY, "--set", "train.distill.teacher=nobody")
    assert code == 2 and "train.distill.teacher 'nobody' cannot teach" in said and "No run named" in said
    shutil.copytree(home / "a", home / "elsewhere")
    meta = json.loads((home / "elsewhere" / "meta.json").read_text())
    (home / "elsewhere" / "meta.json").write_text(json.dumps({**meta, "name": "elsewhere", "split_id": "0" * 12}))
    code, said = zoo("train", "custom_cnn", *TINY, "--set", "train.distill.teacher=elsewhere")
    assert code == 2 and "was trained on split 000000000000" in said and "same data and split" in said
    shutil.rmtree(home / "elsewhere")
    assert sorted(p.name for p in home.iterdir()) == before  # no run folder was claimed


@pytest.mark.parametrize("sets, message", [
    (["train.distill.teacher=a", "train.epochs=0"], "needs train.epochs > 0"),
    (["train.distill.teacher=a", "train.distill.weight=0"], "greater than 0"),
    (["train.distill.teacher=a", "train.distill.weight=1.5"], "less than or equal to 1"),
    (["train.distill.teacher=a", "train.distill.temperature=0"], "greater than 0"),
    (["train.distill.weight=0.5"], "teacher: Field required"),
    (["train.distill.teachr=a"], "did you mean 'teacher'"),
])
def test_recipe_errors(sets: list[str], message: str) -> None:
    with pytest.raises(ZooError, match=message):
        load_recipe("tf_efficientnet_lite0", sets)


def test_tune_refuses_a_distilling_recipe(home: Path) -> None:
    code, said = zoo("tune", "custom_cnn", "--set", "train.distill.teacher=a", "--trials", "1")
    assert code == 2 and "zoo tune cannot do" in said and "train.distill=null" in said


def test_an_interrupted_student_resumes_exactly(home: Path) -> None:
    student = [*TINY[:-1], "--set", "train.epochs=8", "--set", "train.early_stopping.patience=50",
               "--set", "train.distill.teacher=ab"]
    code, said = zoo("train", "custom_cnn", *student, "--quiet", "--name", "straight")
    assert code == 0, said
    proc = _zoo("train", "custom_cnn", *student, "--quiet", "--name", "killed")
    _wait_for_epoch(home / "killed", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    code, said = zoo("train", "custom_cnn", "--resume", "killed", "--quiet")
    assert code == 0, said
    a, b = load_predictions(home / "straight", "test"), load_predictions(home / "killed", "test")
    np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-5)
    metas = [json.loads((home / n / "meta.json").read_text()) for n in ("straight", "killed")]
    assert metas[0]["distill"] == metas[1]["distill"]
