"""Public datasets that ``zoo data fetch`` knows, each pinned to one commit of a Git repository."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """Where a dataset's files live (``{path}/<class>/<file>`` in ``repo`` at ``commit``)."""

    repo: str                      # GitHub owner/name
    commit: str                    # 40-hex commit: the file list and every byte are fixed by it
    path: str                      # folder inside the repository holding the class folders
    counts: dict[str, int]         # files per class that the commit's tree must list
    licence: str                   # shown after every fetch
    manual: str                    # where to download it by hand when the fetch cannot
    may_be_absent: frozenset[str] = frozenset()  # <class>/<file> missing from some copies

    @property
    def total(self) -> int:
        return sum(self.counts.values())


SOURCES: dict[str, Source] = {
    "minet": Source(
        repo="albertotb/curso-csic-ml",
        commit="2ce2db890343d90de834715ea6492e96408b9f8a",
        path="data/minet",
        counts={"biotite": 68, "bornite": 173, "chrysocolla": 163, "malachite": 235,
                "muscovite": 77, "pyrite": 98, "quartz": 142},
        licence="Kaggle 'Minerals Identification Dataset' (asiedubrempong/minerals-identification-"
                "dataset), as committed in albertotb/curso-csic-ml. Licence unknown; the photos "
                "look collected from the web and their photographers likely hold the copyright. "
                "Use for research and evaluation only; do not redistribute.",
        manual="https://www.kaggle.com/datasets/asiedubrempong/minerals-identification-dataset",
        # A snapshot of the repository lacked the git objects of these 9 files.
        may_be_absent=frozenset({
            "bornite/0013.jpg", "bornite/0026.jpg", "bornite/0073.jpg", "chrysocolla/0002.jpg",
            "malachite/0057.jpg", "malachite/0154.jpg", "pyrite/0052.jpg", "pyrite/0063.jpg",
            "quartz/0050.jpg"}),
    ),
}
