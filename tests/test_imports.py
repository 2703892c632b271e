"""The import rule: the command layer is the only code that sees both the compiler and the runner.

Read from the source (``ast``), so the rule holds for imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMAND_LAYER = ("ptycho_spec/cli.py", "ptycho_spec/compat_cli.py", "ptycho_spec/commands/")
# What the runner may use of ptycho_spec: the lock it executes, the schema of its values, the
# names and data rules both halves share, the file formats, errors and atomic writes.
RUNNER_MAY_IMPORT = frozenset(
    {
        "ptycho_spec",
        "ptycho_spec.__version__",
        "ptycho_spec.atomic",
        "ptycho_spec.data_checks",
        "ptycho_spec.errors",
        "ptycho_spec.formats",
        "ptycho_spec.lock",
        "ptycho_spec.schema",
        "ptycho_spec.toml_lines",
        "ptycho_spec.vocabulary",
    }
)


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import in ``path``; ``from a import b`` gives
    ``a.b`` and ``a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _in_command_layer(path: Path) -> bool:
    return _rel(path).startswith(COMMAND_LAYER)


def _package_of(module: str) -> str:
    """``ptycho_spec.lock.Lock`` → ``ptycho_spec.lock``; ``ptycho_spec.formats.npz`` →
    ``ptycho_spec.formats``."""
    return ".".join(module.split(".")[:2])


class TestRunnerImports:
    @pytest.mark.parametrize("path", _modules("runner"), ids=_rel)
    def test_runner_takes_a_lock_and_nothing_else(self, path: Path) -> None:
        """No runner module parses arguments, compiles, verifies or reads host facts: of
        ``ptycho_spec`` it imports only the lock, the schema, shared names, rules and formats."""
        for module, _top in _imports(path):
            assert module.split(".")[0] != "argparse", f"{_rel(path)} imports argparse"
            if module.startswith("ptycho_spec"):
                assert _package_of(module) in RUNNER_MAY_IMPORT, f"{_rel(path)}: {module}"

    @pytest.mark.parametrize("path", _modules("runner"), ids=_rel)
    def test_runner_reads_no_environment(self, path: Path) -> None:
        """No runner module reads ``os.environ`` or ``os.getenv``: settings come from the lock."""
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                name = f"{node.value.id}.{node.attr}"
                assert name not in {"os.environ", "os.getenv"}, f"{_rel(path)}: {name}"


class TestCompilerImports:
    @pytest.mark.parametrize(
        "path", [p for p in _modules("ptycho_spec") if not _in_command_layer(p)], ids=_rel
    )
    def test_compiler_never_sees_the_runner(self, path: Path) -> None:
        """Outside the command layer, no ``ptycho_spec`` module imports ``runner``, torch,
        lightning or the command layer."""
        for module, _top in _imports(path):
            head = module.split(".")[0]
            assert head not in {"runner", "torch", "lightning"}, f"{_rel(path)}: {module}"
            assert not module.startswith(("ptycho_spec.cli", "ptycho_spec.commands")), (
                f"{_rel(path)}: {module}"
            )

    @pytest.mark.parametrize("name", ["ptycho_spec/cli.py", "ptycho_spec/compat_cli.py"], ids=str)
    def test_parsers_import_the_runner_lazily(self, name: str) -> None:
        """The command-line parsers import ``runner`` and ``ptycho_spec.commands`` only
        inside the handlers that run something, so ``validate`` and ``compile`` stay light."""
        for module, top in _imports(ROOT / name):
            if module.startswith(("runner", "ptycho_spec.commands", "torch", "lightning")):
                assert not top, f"{name} imports {module} at module level"
