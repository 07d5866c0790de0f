"""Training batches: worker processes give the batches the training process gives, ranks share
each epoch's permutation, and ``data.workers`` is validated."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_training import random_split

from zoo.console import Reporter
from zoo.data.cache import DecodeCache, decode_array
from zoo.data.pack import PackedPhotos
from zoo.data.preprocessing import Preprocessing
from zoo.errors import ZooError
from zoo.models.factory import build_model
from zoo.train.batches import PhotoBatches, SplitArrays, epoch_seed
from zoo.train.recipes import Recipe, load_recipe
from zoo.train.run import prepare_data

PRE = Preprocessing(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
N = 23


def _recipe(batch_size: int = 4) -> Recipe:
    return Recipe.model_validate({"model": {"name": "custom_cnn", "pretrained": False},
                                  "data": {"image_size": PRE.image_size, "batch_size": batch_size},
                                  "seed": 5})


@pytest.fixture
def packed(tmp_path) -> SplitArrays:
    """A split read from a memory-mapped pack (random photos stored as decode-cache entries)."""
    split = random_split(N, PRE.resize_side, 0)
    cache = DecodeCache(tmp_path / "cache")
    shas = [f"{i:064x}" for i in range(N)]
    for sha, arr in zip(shas, split.arrays):
        cache.path(sha, PRE.resize_side).parent.mkdir(parents=True, exist_ok=True)
        np.save(cache.path(sha, PRE.resize_side), arr)
    pack = cache.pack([tmp_path / "unused"] * N, shas, PRE.resize_side)
    assert cache.misses == 0
    return SplitArrays(split.paths, pack.subset(shas), split.labels)


def _all(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in batches]


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)


def test_workers_give_the_batches_of_the_training_process(packed: SplitArrays) -> None:
    inproc = PhotoBatches(packed, PRE, _recipe())
    workers = PhotoBatches(packed, PRE, _recipe(), workers=2)
    for epoch in (0, 1):
        _assert_same(_all(inproc.train_batches(epoch)), _all(workers.train_batches(epoch)))
    assert not torch.equal(next(inproc.train_batches(0))[0], next(inproc.train_batches(1))[0])
    torch.manual_seed(0)
    model = build_model("custom_cnn", 3, widths=(8, 16))
    for a, b in zip(inproc.features(model, views=2), workers.features(model, views=2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(inproc.eval_features(model), workers.eval_features(model), rtol=0, atol=0)


def test_batches_follow_the_seeded_permutation(packed: SplitArrays) -> None:
    order = np.random.default_rng(epoch_seed(5, 3)).permutation(N)
    for batch_size, kept in ((4, N), (11, 22)):  # 23 = 5x4 + 3 = 2x11 + 1
        photos = PhotoBatches(packed, PRE, _recipe(batch_size))
        labels = torch.cat([y for _, y in photos.train_batches(3)])
        np.testing.assert_array_equal(labels.numpy(), packed.labels[order[:kept]])
        assert len(photos) == -(-N // batch_size)  # a skipped last batch of one photo counts


def test_each_photo_is_augmented_the_same_in_any_order(packed: SplitArrays) -> None:
    data = PhotoBatches(packed, PRE, _recipe()).dataset
    forward = [data[7, i][0] for i in range(5)]
    backward = [data[7, i][0] for i in reversed(range(5))][::-1]
    for a, b in zip(forward, backward):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(data[7, 0][0], data[8, 0][0])


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_partition_the_permutation(world_size: int) -> None:
    split = random_split(N, PRE.resize_side, 1)
    ranks = [PhotoBatches(split, PRE, _recipe(3), rank=r, world_size=world_size) for r in range(world_size)]
    orders = [r.order(2) for r in ranks]
    per_rank = -(-N // world_size)
    assert all(len(o) == per_rank for o in orders)
    assert len({len(r) for r in ranks}) == 1  # the same number of steps on every rank
    perm = np.random.default_rng(epoch_seed(5, 2)).permutation(N)
    np.testing.assert_array_equal(np.stack(orders, 1).ravel(), np.resize(perm, per_rank * world_size))
    assert set(np.concatenate(orders)) == set(range(N))  # every photo, padding repeats the first
    labels = torch.cat([y for _, y in ranks[1].train_batches(2)])
    np.testing.assert_array_equal(labels.numpy(), split.labels[orders[1][:len(labels)]])


def test_rank_must_be_one_of_the_world() -> None:
    split = random_split(4, PRE.resize_side, 1)
    with pytest.raises(ValueError, match="rank 2 is not one of world_size 2"):
        PhotoBatches(split, PRE, _recipe(), rank=2, world_size=2)


@pytest.mark.parametrize("value, cpu, cuda", [("auto", 0, None), (0, 0, 0), (3, 3, 3)])
def test_data_workers(value, cpu: int, cuda: int | None, monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 12)
    recipe, _ = load_recipe("custom_cnn", [f"data.workers={value}"])
    assert recipe.data.loader_workers(cuda=False) == cpu
    assert recipe.data.loader_workers(cuda=True) == (8 if cuda is None else cuda)


@pytest.mark.parametrize("value", ["-1", "many", "true", "1.5"])
def test_bad_data_workers_are_refused(value: str) -> None:
    with pytest.raises(ZooError, match=r"data\.workers: must be 'auto' or a whole number >= 0"):
        load_recipe("custom_cnn", [f"data.workers={value}"])


def test_prepare_data_reads_every_part_from_one_pack(zoo_env, monkeypatch) -> None:
    monkeypatch.delenv("ZOO_CACHE_DIR", raising=False)
    first = prepare_data(None, PRE, Reporter(quiet=True))
    parts = first.parts.values()
    assert {type(p.arrays) for p in parts} == {PackedPhotos}
    assert len({p.arrays.path for p in parts}) == 1 and sum(len(p.arrays) for p in parts) == 24
    for part in parts:
        for path, arr in zip(part.paths, part.arrays):
            np.testing.assert_array_equal(arr, decode_array(first.index.root / path, PRE.resize_side))
    assert "decode cache: 0 hits, 24 decoded" in first.notes
    assert "decode cache: 24 hits, 0 decoded" in prepare_data(None, PRE, Reporter(quiet=True)).notes
