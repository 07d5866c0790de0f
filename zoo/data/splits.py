"""One fixed, stratified train/val/test split per dataset, near-duplicates kept together."""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.dataset import DatasetIndex, Item
from zoo.errors import ZooError
from zoo.fileio import write_json

SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
MIN_PER_CLASS = 3  # one image for each of train, val and test
NEAR_DUPLICATE_BITS = 2  # dHash Hamming distance that counts as "the same photo"
SPLIT_SEED = 0


@dataclass
class Split:
    id: str
    dataset: str
    classes: list[str]
    assignment: dict[str, str]  # relative path -> split name
    groups: dict[str, int]       # relative path -> near-duplicate group

    def paths(self, split: str) -> list[str]:
        return sorted(p for p, s in self.assignment.items() if s == split)

    def counts_by_class(self, index: DatasetIndex) -> dict[str, dict[str, int]]:
        """Photos of each class of ``index`` in train, val and test (files not in the split left out)."""
        counts = {c: dict.fromkeys(SPLITS, 0) for c in index.classes}
        for it in index.items:
            part = self.assignment.get(it.path)
            if part in SPLITS:
                counts[it.label][part] += 1
        return counts


def splits_dir() -> Path:
    return Path(os.environ.get("ZOO_SPLITS_DIR", "data/splits"))


def near_duplicate_groups(items: list[Item], max_bits: int = NEAR_DUPLICATE_BITS) -> list[int]:
    """Union-find over identical content or dHash within ``max_bits``: a group id per item."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashes = np.array([it.dhash for it in items], dtype=np.uint64)
    by_sha: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.sha256 in by_sha:
            parent[find(i)] = find(by_sha[it.sha256])
        by_sha.setdefault(it.sha256, i)
        if i:
            x = np.bitwise_xor(hashes[:i], hashes[i])
            dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(1)
            for j in np.flatnonzero(dist <= max_bits):
                parent[find(i)] = find(int(j))
    return [find(i) for i in range(len(items))]


def _assign(index: DatasetIndex, groups: list[int], seed: int) -> dict[str, str]:
    members: dict[int, list[Item]] = {}
    for it, g in zip(index.items, groups):
        members.setdefault(g, []).append(it)
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for cls in index.classes:
        cls_groups = sorted(g for g, its in members.items() if its[0].label == cls)
        rng.shuffle(cls_groups)
        total = sum(len(members[g]) for g in cls_groups)
        want_test = max(1, round(total * FRACTIONS["test"]))
        want_val = max(1, round(total * FRACTIONS["val"]))
        taken = {"test": 0, "val": 0}
        for g in cls_groups:
            split = next((s for s in ("test", "val") if taken[s] < {"test": want_test,
                                                                    "val": want_val}[s]), "train")
            if split != "train":
                taken[split] += len(members[g])
            for it in members[g]:
                assignment[it.path] = split
    return assignment


def _check_class_sizes(index: DatasetIndex, groups: list[int]) -> None:
    """Each class needs MIN_PER_CLASS distinct photos (near-duplicates count once), and the
    dataset at least two classes; otherwise one of train / val / test would lack the class."""
    if len(index.classes) < 2:
        raise ZooError(f"{index.root} has {len(index.classes)} class folder(s) with readable images "
                       f"({', '.join(index.classes) or 'none'}); a classifier needs at least 2. "
                       "Run `zoo data check` to see which files were skipped and why.")
    leaders: dict[int, str] = {}
    for it, g in zip(index.items, groups):
        leaders.setdefault(g, it.label)
    distinct = {c: sum(1 for label in leaders.values() if label == c) for c in index.classes}
    small = {c: n for c, n in distinct.items() if n < MIN_PER_CLASS}
    if small:
        counts = index.counts()
        listed = ", ".join(f"{c} ({counts[c]}{'' if n == counts[c] else f', only {n} distinct'})"
                           for c, n in small.items())
        raise ZooError(f"Too few photos in class {listed} of {index.root}: each class needs at least "
                       f"{MIN_PER_CLASS} distinct photos (one each for train, val and test; "
                       "near-duplicate copies count once). Add photos or remove the class folder.")


def make_split(index: DatasetIndex, seed: int = SPLIT_SEED) -> Split:
    groups = near_duplicate_groups(index.items)
    _check_class_sizes(index, groups)
    assignment = _assign(index, groups, seed)
    digest = hashlib.sha256()
    for it in sorted(index.items, key=lambda it: it.path):
        digest.update(f"{it.path}\t{it.sha256}\t{assignment[it.path]}\n".encode())
    group_of = {it.path: g for it, g in zip(index.items, groups)}
    return Split(digest.hexdigest()[:12], index.name, index.classes, assignment, group_of)


def save_split(split: Split, index: DatasetIndex, path: Path) -> None:
    by_path = {it.path: it for it in index.items}
    write_json(path, {
        "id": split.id, "dataset": split.dataset, "classes": split.classes, "seed": SPLIT_SEED,
        "fractions": FRACTIONS,
        "items": [{"path": p, "label": by_path[p].label, "sha256": by_path[p].sha256, "split": s,
                   "group": split.groups[p]} for p, s in sorted(split.assignment.items())],
    })


def load_split(path: Path) -> Split:
    try:
        data = json.loads(path.read_text())
        return Split(data["id"], data["dataset"], data["classes"],
                     {it["path"]: it["split"] for it in data["items"]},
                     {it["path"]: it["group"] for it in data["items"]})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ZooError(f"Split file {path} is damaged ({exc}). Delete it to make a new split "
                       "(runs on the old split will no longer be ranked with new ones).") from exc


def get_split(index: DatasetIndex) -> tuple[Split, list[str]]:
    """The dataset's fixed split (made and saved on first use) and notes on files it does not cover."""
    path = splits_dir() / f"{index.name}.json"
    if not path.exists():
        split = make_split(index)
        save_split(split, index, path)
        return split, [f"new split {split.id} saved to {path}"]
    split = load_split(path)
    current = {it.path for it in index.items}
    notes = []
    new = sorted(current - split.assignment.keys())
    gone = sorted(split.assignment.keys() - current)
    if new:
        notes.append(f"{len(new)} file(s) are not in split {path} and are not used "
                     f"(e.g. {new[0]}); delete the split file to re-split")
    if gone:
        notes.append(f"{len(gone)} file(s) of the split are missing or unreadable (e.g. {gone[0]})")
    return split, notes


def cross_validation_folds(split: Split, index: DatasetIndex, k: int, seed: int = SPLIT_SEED) -> list[Split]:
    """``k`` splits for choosing a recipe by cross-validation: ``split``'s train+val photos are
    dealt into ``k`` folds (near-duplicate groups kept together, each class spread evenly) and
    each fold is once the validation part; the test photos stay test, never used for a choice."""
    if k < 2:
        raise ZooError(f"Cross-validation needs at least 2 folds, not {k}.")
    label = {it.path: it.label for it in index.items}
    rng = random.Random(seed)
    fold_of_group: dict[int, int] = {}
    for cls in sorted(split.classes):
        groups = list(dict.fromkeys(split.groups[p] for p in sorted(split.assignment)
                                    if split.assignment[p] != "test" and label.get(p) == cls))
        rng.shuffle(groups)
        fold_of_group.update((g, i % k) for i, g in enumerate(groups))
    folds = []
    for fold in range(k):
        assignment = {p: s if s == "test" else ("val" if fold_of_group[split.groups[p]] == fold else "train")
                      for p, s in split.assignment.items() if p in label}
        folds.append(Split(f"{split.id}-cv{fold}of{k}", split.dataset, split.classes, assignment,
                           {p: split.groups[p] for p in assignment}))
    return folds
