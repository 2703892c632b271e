"""Faults and hostile files: writes killed midway, run-directory claims, and bundles,
checkpoints and NPZ inputs that are truncated, corrupted, foreign or carry code."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import pytest
import tomli_w
import torch
from runspec import write_npz_run, write_spec

from ptycho_spec import __version__
from ptycho_spec.cli import main
from ptycho_spec.compile import compile_spec
from ptycho_spec.errors import DataError, UsageError
from ptycho_spec.lock import dumps_lock
from runner import rundir
from runner.models.pinn import PtychoPINN
from runner.physics.scaling import ScalingConstants
from runner.train.bundle import MEMBERS, Bundle, dumps_bundle, read_bundle
from runner.train.checkpoints import read_checkpoint

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates ``marker``: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


# --- writes killed midway --------------------------------------------------------------------

WRITER = """
    import sys
    from pathlib import Path
    {setup}
    target, i = Path(sys.argv[1]), 0
    print("writing", flush=True)
    while True:
        i = (i + 1) % 250
        {write}
"""


def kill_while_writing(
    target: Path, *, setup: str, write: str, kills: int, check: Callable[[Path], None]
) -> None:
    """Start a process rewriting ``target`` in a loop, SIGKILL it at a random moment, and
    ``check`` what is left; ``kills`` times."""
    rng = random.Random(0)
    for _ in range(kills):
        process = started(WRITER.format(setup=setup, write=write), target, says="writing")
        time.sleep(rng.uniform(0.05, 0.4))
        sigkill(process)
        check(target)


def started(code: str, path: Path, *, says: str) -> subprocess.Popen[str]:
    """A Python process running ``code`` (``sys.argv[1]`` is ``path``), once it printed ``says``."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == says + "\n"
    return process


def sigkill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()  # type: ignore[union-attr]


class TestKilledWrites:
    def test_atomic_writes_leave_the_old_or_the_new_file(self, tmp_path: Path) -> None:
        """SIGKILL during repeated 8 MB writes: the file is absent or one whole payload."""

        def whole(target: Path) -> None:
            data = target.read_bytes() if target.exists() else None
            assert data is None or (len(data) == 8 << 20 and data == data[:1] * len(data))

        kill_while_writing(
            tmp_path / "out.bin",
            setup="from ptycho_spec import atomic",
            write="atomic.write_bytes(target, bytes([i]) * (8 << 20))",
            kills=6,
            check=whole,
        )

    def test_checkpoint_writes_leave_a_readable_checkpoint(self, tmp_path: Path) -> None:
        """SIGKILL during repeated checkpoint saves: last.ckpt always loads and is whole."""
        keys = "('state_dict', 'loops', 'callbacks', 'optimizer_states', 'global_step')"

        def loads(target: Path) -> None:
            if target.exists():
                w = read_checkpoint(target, lock_digest="sha256:run")["w"]
                assert w.shape == (1 << 20,) and bool((w == w[0]).all())

        kill_while_writing(
            tmp_path / "last.ckpt",
            setup=(
                "import torch\n    from runner.train.checkpoints import AtomicCheckpointIO\n"
                "    io = AtomicCheckpointIO(lock_digest='sha256:run')\n"
                f"    base = dict.fromkeys({keys}, 0)"
            ),
            write="io.save_checkpoint({**base, 'w': torch.full((1 << 20,), float(i))}, target)",
            kills=2,
            check=loads,
        )

    def test_a_claim_removes_temporaries_of_killed_writes(self, tmp_path: Path) -> None:
        """Claiming a run directory deletes ``.NAME.XXXX.tmp`` files a killed process left."""
        (tmp_path / "checkpoints").mkdir()
        leftovers = [tmp_path / ".metrics.json.ab12.tmp", tmp_path / "checkpoints" / ".x.tmp"]
        for path in leftovers:
            path.write_bytes(b"half")
        with rundir.claim(tmp_path, force=False, resume=True):
            assert not any(p.exists() for p in leftovers)


# --- run-directory claims --------------------------------------------------------------------

HOLDER = """
    import sys, time
    from pathlib import Path
    from runner import rundir
    with rundir.claim(Path(sys.argv[1]), force=False):
        print("held", flush=True)
        time.sleep(120)
"""


def hold(run_dir: Path) -> subprocess.Popen[str]:
    return started(HOLDER, run_dir, says="held")


class TestClaims:
    def test_run_refuses_a_directory_a_live_process_holds(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``run`` into a directory another process holds: exit 1 naming that process."""
        spec = write_spec(tmp_path)
        holder = hold(tmp_path / "run")
        try:
            code = main(["run", str(spec), "--out", str(tmp_path / "run")])
            err = capsys.readouterr().err
        finally:
            sigkill(holder)
        assert code == 1 and f"in use by process {holder.pid}" in err
        assert len(err.strip().splitlines()) == 1

    def test_a_killed_holders_claim_is_taken_over(self, tmp_path: Path) -> None:
        """The claim of a SIGKILLed process is stale: its pid file remains, its lock does not."""
        holder = hold(tmp_path)
        sigkill(holder)
        assert (tmp_path / rundir.CLAIM).read_text().strip() == str(holder.pid)
        assert rundir.holder(tmp_path) is None
        with rundir.claim(tmp_path, force=False):
            assert rundir.holder(tmp_path) == os.getpid()
        assert not (tmp_path / rundir.CLAIM).exists()

    def test_a_complete_directory_needs_force(self, tmp_path: Path) -> None:
        """Without --force a complete run is refused; with it, its outputs are removed first."""
        rundir.mark_complete(tmp_path, digest="sha256:old")
        (tmp_path / "metrics.json").write_text("{}")
        with pytest.raises(UsageError, match="--force"), rundir.claim(tmp_path, force=False):
            pass
        with rundir.claim(tmp_path, force=True):
            assert not (tmp_path / "metrics.json").exists() and not rundir.is_complete(tmp_path)


# --- hostile and broken files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The members of a valid bundle (an untrained tiny model and its training lock)."""
    folder = tmp_path_factory.mktemp("bundle")
    lock = compile_spec(str(write_spec(folder, task="train")))
    c = lock.resolved.canonical
    scaling = ScalingConstants(input_scale=1, photon_scale=1, mean_photons=1e6, initial_gain=1)
    torch.manual_seed(0)
    net = PtychoPINN(
        model=c.model, probe=torch.ones(64, 64, dtype=torch.complex64), scaling=scaling
    )
    bundle = Bundle(
        state_dict=net.state_dict(),
        lock_text=dumps_lock(lock),
        scaling=attrs.asdict(scaling),
        model={"N": 64, "gridsize": 1, "architecture": "cnn"},
    )
    with zipfile.ZipFile(io.BytesIO(dumps_bundle(bundle, tool_version=__version__))) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return out.getvalue()


def with_members(parts: dict[str, bytes], **replaced: bytes) -> bytes:
    """A bundle whose members ``replaced`` (``state_dict_pt=`` for ``state_dict.pt``) are
    swapped in with a manifest listing their true hashes: only the content is hostile."""
    members = dict(parts)
    members.update(
        {k.replace("_pt", ".pt").replace("_toml", ".toml"): v for k, v in replaced.items()}
    )

    manifest = tomllib.loads(members["manifest.toml"].decode())
    manifest["members"] = {
        name: {"sha256": hashlib.sha256(members[name]).hexdigest(), "size": len(members[name])}
        for name in MEMBERS[1:]
    }
    members["manifest.toml"] = tomli_w.dumps(manifest).encode()
    return zip_of(members)


def hostile_bundles(parts: dict[str, bytes], marker: Path) -> dict[str, bytes]:
    """Name → bundle bytes that must all be refused with exit code 4."""
    lock_text = parts["lock.toml"].decode()
    return {
        "absolute member": zip_of({**parts, "/etc/evil": b"x"}),
        "parent member": zip_of({**parts, "../evil": b"x"}),
        "extra member": zip_of({**parts, "notes.txt": b"x"}),
        "missing member": zip_of({k: v for k, v in parts.items() if k != "state_dict.pt"}),
        "oversize member": zip_of({**parts, "lock.toml": b"#" * (5 << 20)}),
        "PtychoPINN wts.h5.zip": zip_of(
            {
                "manifest.dill": pickle.dumps(Payload(marker)),
                "autoencoder/model.keras": b"\x89HDF",
                "autoencoder/params.dill": pickle.dumps(Payload(marker)),
            }
        ),
        "random zip": zip_of({"a.txt": os.urandom(64)}),
        "text file": b"this is not a bundle\n",
        "truncated": zip_of(parts)[: len(zip_of(parts)) // 2],
        "corrupted weights": zip_of({**parts, "state_dict.pt": parts["state_dict.pt"][:-64]}),
        "pickle payload as weights": with_members(
            parts, state_dict_pt=pickle.dumps({"w": Payload(marker)})
        ),
        "text as weights": with_members(parts, state_dict_pt=b"weights\n"),
        "edited lock": with_members(
            parts, lock_toml=lock_text.replace("nepochs = 1\n", "nepochs = 2\n").encode()
        ),
    }


CASES = [
    "absolute member",
    "parent member",
    "extra member",
    "missing member",
    "oversize member",
    "PtychoPINN wts.h5.zip",
    "random zip",
    "text file",
    "truncated",
    "corrupted weights",
    "pickle payload as weights",
    "text as weights",
    "edited lock",
]


class TestHostileBundles:
    @pytest.mark.parametrize("case", CASES)
    def test_read_bundle_refuses(
        self, bundle_parts: dict[str, bytes], tmp_path: Path, case: str
    ) -> None:
        """The runner's reader raises DataError (exit 4), and no payload runs."""
        marker = tmp_path / "payload-ran"
        path = tmp_path / "model.bundle"
        path.write_bytes(hostile_bundles(bundle_parts, marker)[case])
        with pytest.raises(DataError) as caught:
            read_bundle(path)
        assert caught.value.exit_code == 4 and str(path) in str(caught.value)
        assert not marker.exists()

    @pytest.mark.parametrize("case", CASES)
    def test_an_inference_run_exits_4(
        self,
        bundle_parts: dict[str, bytes],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        case: str,
    ) -> None:
        """``run`` of an inference spec naming the bundle: exit 4, one line, no traceback,
        no payload run, no run directory."""
        marker = tmp_path / "payload-ran"
        bundle = tmp_path / "model.bundle"
        bundle.write_bytes(hostile_bundles(bundle_parts, marker)[case])
        spec = tmp_path / "infer.toml"
        spec.write_text(
            'spec_version = 1\n[run]\ntask = "infer"\n[data]\nsource = "simulate"\n'
            "[data.simulate]\nobject_size = 80\nscan_step_test = 8\n"
            f'[inference]\nbundle = "{bundle}"\n[execution]\naccelerator = "cpu"\n'
        )
        code = main(["run", str(spec), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 4 and str(bundle) in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert not marker.exists() and not (tmp_path / "run").exists()

    def test_the_valid_bundle_reads(self, bundle_parts: dict[str, bytes], tmp_path: Path) -> None:
        """The members the hostile cases start from make a bundle that reads."""
        path = tmp_path / "model.bundle"
        path.write_bytes(with_members(bundle_parts))
        assert set(read_bundle(path).state_dict) == set(
            torch.load(io.BytesIO(bundle_parts["state_dict.pt"]), weights_only=True)
        )


def test_an_object_array_npz_exits_4_without_running_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An NPZ holding a pickled object array (with a payload): exit 4 naming the array."""
    marker = tmp_path / "payload-ran"
    payload = np.empty(1, dtype=object)
    payload[0] = Payload(marker)
    spec = write_npz_run(tmp_path, name="train", extra=payload)
    assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 4
    err = capsys.readouterr().err
    assert "extra: object arrays are not allowed" in err and "Traceback" not in err
    assert not marker.exists()
