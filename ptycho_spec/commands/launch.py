"""Launchers: run a study's points, each one the ``run`` command on the point's lock.

* local: one process per point, ``ptycho-spec run LOCK --out DIR --force``, with its output in
  the point's log file. Without GPUs to spread over, the points run one after another in the
  environment as it is; with ``launcher.gpus = n``, up to ``n`` devices are handed out, each
  point taking ``execution.devices`` of them through ``CUDA_VISIBLE_DEVICES`` and starting as
  soon as enough are free (in point order). A point's process dies with the study's (Linux),
  so a killed study leaves no run behind holding its directory.
* slurm: one submitit job array per shape of job, each job calling :func:`run_point` in every
  one of its tasks. ``execution.num_nodes`` → ``nodes``, ``execution.devices`` →
  ``tasks_per_node`` (one process per device, as Lightning's DDP under SLURM expects: it reads
  the ranks from SLURM's variables) and, for ``accelerator = "cuda"``, ``gpus_per_node``.

``--force`` only ever replaces a point whose directory holds another lock's complete run: the
study skips the points already complete under their current lock before launching.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from attrs import frozen

from ptycho_spec.errors import RunError, UsageError
from ptycho_spec.study.spec import Launcher

_POLL_S: Final = 0.2
_PR_SET_PDEATHSIG: Final = 1


@frozen(kw_only=True)
class Job:
    """One point to run: its lock, run directory and log, and the devices it asks for."""

    id: str
    label: str
    lock: Path
    run_dir: Path
    log: Path
    devices: int  # per node
    num_nodes: int
    cuda: bool


@frozen(kw_only=True)
class Outcome:
    """How a launched point ended: ``complete`` or ``failed`` (with the run's last words)."""

    status: str
    seconds: float
    detail: str = ""


Say = Callable[[Job, str], None]


def run_point(lock: str, out_dir: str) -> int:
    """A point's run in this process: the ``run`` command on its lock (a SLURM job's tasks
    each call it; Lightning makes them the ranks of one DDP run). Returns the exit code."""
    from ptycho_spec.cli import main

    return main(["run", lock, "--out", out_dir, "--force"])


# --- local ------------------------------------------------------------------------------------


class Slots:
    """Devices handed out to points and taken back when they finish."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = tuple(ids)
        self._free = list(ids)

    def take(self, count: int) -> tuple[str, ...] | None:
        """``count`` free devices, lowest first, or None while fewer are free."""
        if count > len(self._free):
            return None
        taken, self._free = tuple(self._free[:count]), self._free[count:]
        return taken

    def give(self, ids: Sequence[str]) -> None:
        self._free = sorted([*self._free, *ids], key=self.ids.index)


def device_ids(environ: Mapping[str, str], count: int) -> list[str]:
    """The first ``count`` GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in visible.split(",") if x.strip()] if visible is not None else None
    if ids is None:
        return [str(i) for i in range(count)]
    if len(ids) < count:
        msg = f"launcher.gpus = {count}, but CUDA_VISIBLE_DEVICES names {len(ids)}: {visible}"
        raise UsageError(msg)
    return ids[:count]


def check_fits(jobs: Sequence[Job], gpus: int) -> None:
    """Every point fits the devices handed out (before any point runs)."""
    for job in jobs:
        if job.num_nodes > 1:
            msg = f"point {job.id} ({job.label}): execution.num_nodes = {job.num_nodes} needs the slurm launcher"
            raise UsageError(msg)
        if gpus and job.devices > gpus:
            msg = f"point {job.id} ({job.label}): execution.devices = {job.devices} exceeds launcher.gpus = {gpus}"
            raise UsageError(msg)


def run_local(
    jobs: Sequence[Job], *, gpus: int, environ: Mapping[str, str], say: Say
) -> dict[str, Outcome]:
    """Run every job on this host (see the module docstring); returns each job's outcome."""
    slots = Slots(device_ids(environ, gpus) if gpus else ["all"])
    pending = list(jobs)
    running: dict[str, tuple[Job, tuple[str, ...], subprocess.Popen[bytes], float]] = {}
    outcomes: dict[str, Outcome] = {}
    try:
        while pending or running:
            while pending and (ids := slots.take(pending[0].devices if gpus else 1)) is not None:
                job = pending.pop(0)
                visible = {"CUDA_VISIBLE_DEVICES": ",".join(ids)} if gpus else {}
                running[job.id] = (job, ids, _start(job, {**environ, **visible}), time.monotonic())
                say(job, "started" + (f" on GPU {', '.join(ids)}" if gpus else ""))
            done = [key for key, (_, _, proc, _) in running.items() if proc.poll() is not None]
            if not done:
                time.sleep(_POLL_S)
            for key in done:
                job, ids, proc, started = running.pop(key)
                slots.give(ids)
                outcomes[key] = _outcome(proc.returncode, time.monotonic() - started, job.log)
                say(job, describe(outcomes[key]))
    finally:
        for _job, _ids, proc, _started in running.values():
            proc.terminate()
            proc.wait()
    return outcomes


def _start(job: Job, environ: Mapping[str, str]) -> subprocess.Popen[bytes]:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ptycho_spec.cli", "run", str(job.lock)]
    command += ["--out", str(job.run_dir), "--force"]
    with open(job.log, "wb") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def _die_with_parent() -> None:
    """In the child before it runs: SIGTERM when the study's process dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _outcome(code: int, seconds: float, log: Path) -> Outcome:
    if code == 0:
        return Outcome(status="complete", seconds=seconds)
    detail = f"exit {code}: {_last_line(log)}; see {log}"
    return Outcome(status="failed", seconds=seconds, detail=detail)


def _last_line(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1].strip() if lines else "no output"


def describe(outcome: Outcome) -> str:
    """``complete in 12.3 s``, ``failed in 4.0 s (exit 1: error: …)``."""
    text = f"{outcome.status} in {outcome.seconds:.1f} s"
    return f"{text} ({outcome.detail})" if outcome.detail else text


# --- slurm ------------------------------------------------------------------------------------


def submitit_module() -> Any:
    """submitit, or ``UsageError`` saying how to install it."""
    try:
        import submitit
    except ImportError:
        msg = "launcher.kind = \"slurm\" needs submitit: pip install 'ptycho-spec[slurm]'"
        raise UsageError(msg) from None
    return submitit


def check_slurm(cluster: str) -> None:
    """``UsageError`` unless the slurm launcher can submit from here: submitit installed and,
    for a real cluster, SLURM's ``sbatch`` and ``srun`` on the PATH."""
    submitit_module()
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if cluster == "slurm" and missing:
        msg = f'launcher.kind = "slurm": no {" or ".join(missing)} on this host\'s PATH; run the study on a SLURM login node'
        raise UsageError(msg)


def job_parameters(launcher: Launcher, job: Job, *, name: str) -> dict[str, Any]:
    """submitit's parameters for ``job``'s array (jobs of one array share them)."""
    parameters: dict[str, Any] = {
        "name": name,
        "timeout_min": launcher.time_min,
        "nodes": job.num_nodes,
        "tasks_per_node": job.devices,
        "cpus_per_task": launcher.cpus_per_task,
        "slurm_array_parallelism": launcher.array_parallelism,
    }
    if job.cuda:
        parameters["gpus_per_node"] = job.devices
    if launcher.partition is not None:
        parameters["slurm_partition"] = launcher.partition
    if launcher.account is not None:
        parameters["slurm_account"] = launcher.account
    return parameters


def run_slurm(
    jobs: Sequence[Job],
    launcher: Launcher,
    *,
    folder: Path,
    name: str,
    say: Say,
    cluster: str = "slurm",
) -> dict[str, Outcome]:
    """Submit one job array per shape of job and wait for every job; ``cluster`` is
    submitit's (``"local"`` runs the jobs as processes on this host)."""
    submitit = submitit_module()
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    shapes: dict[tuple[Any, ...], list[Job]] = {}
    for job in jobs:
        key = tuple(sorted(job_parameters(launcher, job, name=name).items()))
        shapes.setdefault(key, []).append(job)
    submitted: dict[str, tuple[Job, Any, float]] = {}
    try:
        for key, group in shapes.items():
            executor.update_parameters(**dict(key))
            arrays = _submit(executor, submitit, group)
            for job, handle in zip(group, arrays, strict=True):
                submitted[handle.job_id] = (job, handle, time.monotonic())
                say(job, f"submitted as job {handle.job_id}")
        return _wait(submitted, submitit, say)
    except KeyboardInterrupt:
        for _job, handle, _started in submitted.values():
            handle.cancel(check=False)
        raise


def _submit(executor: Any, submitit: Any, group: Sequence[Job]) -> list[Any]:
    try:
        return executor.map_array(
            run_point, [str(j.lock) for j in group], [str(j.run_dir) for j in group]
        )
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as exc:
        # sbatch's own complaint (a partition or account it does not know) is the reason
        reason = [x.strip().strip("'\"") for x in str(exc).splitlines() if x.strip()]
        msg = f"sbatch refused the job array: {reason[-1] if reason else type(exc).__name__}"
        raise RunError(msg) from None


def _wait(
    submitted: dict[str, tuple[Job, Any, float]], submitit: Any, say: Say
) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    handles = [handle for _, handle, _ in submitted.values()]
    for handle in submitit.helpers.as_completed(handles, poll_frequency=1):
        job, _, started = submitted[handle.job_id]
        seconds = time.monotonic() - started
        try:
            code = handle.result()
        except submitit.core.utils.UncompletedJobError as exc:
            reason = [x for x in str(exc).splitlines() if x.strip()]
            outcome = Outcome(status="failed", seconds=seconds, detail=reason[-1] if reason else "")
        else:
            outcome = (
                Outcome(status="complete", seconds=seconds)
                if code == 0
                else Outcome(
                    status="failed",
                    seconds=seconds,
                    detail=f"exit {code}; see {handle.paths.stderr}",
                )
            )
        outcomes[job.id] = outcome
        say(job, describe(outcome))
    return outcomes
