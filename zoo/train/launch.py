"""``zoo train RECIPE --devices N``: runs torchrun for you, as ``python -m torch.distributed.run
--standalone --nproc-per-node N -m zoo train RECIPE ...`` (without ``--devices``) would, and turns
a process that died into a message naming the run and how to continue it. Across machines, run
torchrun yourself (README, "Engine"). The processes train as ``zoo.train.distributed`` describes.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from zoo.errors import ZooError
from zoo.models.runtime import Runtime
from zoo.paths import runs_home
from zoo.store.runs import new_run_name, read_meta, run_dir
from zoo.train.distributed import Cluster, process_device
from zoo.train.recipes import Recipe
from zoo.train.resume import STATE_DIR, STATE_FILE


def torchrun_args(nproc: int, zoo_args: list[str]) -> list[str]:
    """torchrun's arguments for ``nproc`` processes of ``python -m zoo ZOO_ARGS`` on this machine."""
    return ["--standalone", "--nproc-per-node", str(nproc), "-m", "zoo", *zoo_args]


def launch_training(nproc: int, recipe: str, rec: Recipe, device: str | None, run: str | None,
                    resume: bool, options: list[str]) -> None:
    """``zoo train RECIPE`` of run ``run`` (``resume``: continue it; None: a new run named here,
    so that a failure can name it) with ``options`` in ``nproc`` processes, waited for.

    Checks first that the last process has a device (one GPU each). A process that explains
    its own failure (bad input, interrupted) has printed why; one that died is explained here."""
    if Cluster.from_env().distributed:
        raise ZooError("--devices starts torchrun itself; under torchrun, drop --devices.")
    Runtime.create(process_device(device or rec.train.device, nproc, nproc - 1), rec.train.precision)
    home = runs_home()
    run = run or new_run_name(rec.model.name, home)
    failure = _torchrun(nproc, ["train", recipe, "--resume" if resume else "--name", run, *options])
    if failure is None:
        return
    rank, code = failure
    if code in (2, 130):
        raise ZooError(f"Run '{run}' stopped in process {rank} of {nproc} (its message is above).",
                       exit_code=code)
    raise ZooError(f"Training process {rank} of {nproc} {_death(code)}. "
                   f"{_next_step(recipe, run, home, nproc)}", exit_code=1)


def _torchrun(nproc: int, zoo_args: list[str]) -> tuple[int, int] | None:
    """Run torchrun in this process; None when every process succeeded, else the first failed
    process's rank and exit code (negative: killed by that signal; 130: the launcher was)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # A share of the CPU cores per process (torchrun would set 1 and warn), unless set already.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        run(parse_args(torchrun_args(nproc, zoo_args)))
    except SignalException:
        return 0, 130
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        return rank, failure.exitcode
    return None


def _death(code: int) -> str:
    if code < 0:
        return f"was killed ({signal.Signals(-code).name})"
    return f"failed (exit code {code}; its error is printed above)"


def _next_step(recipe: str, run: str, home: Path, nproc: int) -> str:
    path = run_dir(run, home, must_exist=False)
    if not (path / "meta.json").is_file():
        return "No run folder was written; fix the cause and start again."
    if read_meta(path).get("status") == "finished":
        return f"Run '{run}' had finished: see {path}."
    if (path / STATE_DIR / STATE_FILE).is_file():
        return (f"Run '{run}' keeps its last finished epoch; continue it with: "
                f"zoo train {recipe} --resume {run} --devices {nproc}")
    return (f"Run '{run}' stopped before its first epoch ended; start again with another --name "
            f"(or delete {path}).")
