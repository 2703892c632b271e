"""How long `ptycho-spec validate` takes on a typical spec, and whether it imports torch.

    python benchmarks/validate.py [SPEC] [--runs N]

Times the command as a subprocess (interpreter start included; median of N runs), then the
validation itself in-process (median of N runs after one warm-up), and checks in a fresh
interpreter that neither torch nor lightning was imported.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT / "examples" / "quickstart.toml"
IMPORT_CHECK = """
import sys
from ptycho_spec.cli import main
main(["validate", {spec!r}])
print(",".join(m for m in ("torch", "lightning") if m in sys.modules) or "-")
"""


def command_seconds(spec: Path, runs: int) -> list[float]:
    """Wall time of `ptycho-spec validate SPEC` as a subprocess, per run."""
    exe = shutil.which("ptycho-spec") or str(Path(sys.executable).parent / "ptycho-spec")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([exe, "validate", str(spec)], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def in_process_seconds(spec: Path, runs: int) -> list[float]:
    """Wall time of `validate_spec` in this process (after one warm-up call), per run."""
    from ptycho_spec.compile import validate_spec

    validate_spec(str(spec))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        validate_spec(str(spec))
        times.append(time.perf_counter() - start)
    return times


def heavy_imports(spec: Path) -> str:
    """Heavy modules imported by validate in a fresh interpreter ("-" for none)."""
    code = IMPORT_CHECK.format(spec=str(spec))
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    command = command_seconds(args.spec, args.runs)
    inside = in_process_seconds(args.spec, args.runs)
    heavy = heavy_imports(args.spec)
    print(f"ptycho-spec validate {args.spec.name} ({args.runs} runs)")
    print(f"{'measure':<34}{'median':>10}{'min':>10}{'max':>10}")
    for name, times in (
        ("command (subprocess, with startup)", command),
        ("validate_spec (in process)", inside),
    ):
        print(
            f"{name:<34}{statistics.median(times) * 1e3:>8.1f}ms{min(times) * 1e3:>8.1f}ms{max(times) * 1e3:>8.1f}ms"
        )
    print(f"torch/lightning imported: {heavy if heavy != '-' else 'no'}")
    return 0 if heavy == "-" else 1


if __name__ == "__main__":
    sys.exit(main())
