"""Layers → a checked ``Spec`` (validate) → a resolved, locked run (compile).

:func:`check_layers` and :func:`compile_run` are pure: they read only the layers, the input
facts and the host facts given to them. :func:`validate_spec` and :func:`compile_spec` are the
I/O wrappers the command line uses: they read spec files, the environment, data headers and
the host. ``validate`` never opens data files or bundles; ``compile`` does. Resolution works
on absolute paths; the lock names the files below the spec's folder relative to it
(``ptycho_spec.locate``), so that its digest does not depend on where the project lives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

import attrs
from attrs import frozen

from ptycho_spec.errors import Origin, SpecError, SpecIssue
from ptycho_spec.facts import HostFacts, InputFacts, read_host, read_inputs
from ptycho_spec.load import Layer, load_layers
from ptycho_spec.locate import recorded_path
from ptycho_spec.lock import Inputs, Lock, make_lock
from ptycho_spec.merge import Merged, merge
from ptycho_spec.resolve import (
    PATH_FIELDS,
    Resolution,
    absolute_paths,
    evolve_in,
    input_paths,
    resolve,
)
from ptycho_spec.rules import Context, Finding, check, dedupe
from ptycho_spec.schema import Resolved, Spec
from ptycho_spec.tree import KeyPath, dotted, key_path, value_at
from ptycho_spec.validate import sort_issues, walk_spec


@frozen
class Checked:
    """A valid spec, the merged layers it came from, and the warnings found on the way."""

    spec: Spec
    merged: Merged
    warnings: tuple[SpecIssue, ...] = ()


def check_layers(layers: Sequence[Layer], host: HostFacts) -> Checked:
    """Merge, structure and check layers without data; ``SpecError`` lists every problem."""
    layer_warnings = [w for layer in layers for w in layer.warnings]
    try:
        merged = merge(layers)
    except SpecError as exc:
        raise SpecError(exc.issues, warnings=sort_issues(layer_warnings)) from None
    spec, issues = walk_spec(merged)
    ctx = Context(origin=merged.locate, explicit=merged.explicit, installed=host.installed)
    findings = [f for f in check(spec, ctx) if not f.concerns({i.path for i in issues})]
    warnings = _warnings(layer_warnings, findings)
    _raise_errors([*(Finding(i) for i in issues), *findings], warnings)
    return Checked(spec=spec, merged=merged, warnings=warnings)


def compile_run(layers: Sequence[Layer], facts: InputFacts, host: HostFacts) -> Lock:
    """Resolve layers against input and host facts into a lock (warnings ride along)."""
    return _resolve_checked(layers, check_layers(layers, host), facts, host)


def _resolve_checked(
    layers: Sequence[Layer], checked: Checked, facts: InputFacts, host: HostFacts
) -> Lock:
    resolution = resolve(checked.spec, checked.merged, facts, host)
    findings = list(resolution.findings)
    if resolution.resolved is not None:
        findings += check(
            as_spec(resolution.resolved), _resolved_context(checked.merged, resolution, host)
        )
    findings = dedupe(findings)
    warnings = _warnings(list(checked.warnings), findings)
    _raise_errors(findings, warnings)
    assert resolution.resolved is not None
    project_dir = _project_dir(checked.merged, host.cwd)

    def named(path: str) -> str:
        return recorded_path(os.path.join(host.cwd, path), project_dir)

    inputs = Inputs(
        specs=tuple(attrs.evolve(x.file, path=named(x.file.path)) for x in layers if x.file),
        data=tuple(attrs.evolve(f.input, path=named(f.input.path)) for f in facts.files),
    )
    provenance = {
        key: _named_origin(o, named, [f.input.path for f in facts.files])
        for key, o in resolution.provenance.items()
    }
    return make_lock(
        _named_paths(resolution.resolved, named),
        provenance,
        inputs,
        host.environment,
        warnings,
        project_dir=project_dir,
    )


def _named_origin(origin: Origin, named: Callable[[str], str], files: Sequence[str]) -> Origin:
    """``origin`` with its file, and the data files its detail mentions (``all 12 patterns of
    /p/train.npz``), named as the lock names files."""
    detail = origin.detail
    for path in files:
        detail = detail.replace(path, named(path)) if detail else detail
    return attrs.evolve(origin, file=named(origin.file) if origin.file else None, detail=detail)


def _project_dir(merged: Merged, cwd: str) -> str:
    """The folder of the spec file compiled (the working directory without one)."""
    top = merged.top
    if top is None or top.source is None:
        return cwd
    return os.path.dirname(top.file.path if top.file else os.path.join(cwd, top.source))


def _named_paths(resolved: Resolved, named: Callable[[str], str]) -> Resolved:
    """The resolved run with each file setting named as the lock names files (``locate``)."""
    canonical = resolved.canonical
    for path in PATH_FIELDS:
        value = value_at(canonical, path)
        if isinstance(value, str) and os.path.isabs(value):  # not ``"disk"``, a probe by name
            canonical = evolve_in(canonical, path, named(value))
    return attrs.evolve(resolved, canonical=canonical)


def as_spec(resolved: Resolved) -> Spec:
    """A resolved run in the shape of a spec (for the rules, and for turning locks into specs)."""
    c = resolved.canonical
    return Spec(
        run=c.run,
        data=c.data,
        model=c.model,
        training=c.training,
        inference=c.inference,
        refine=c.refine,
        execution=resolved.execution,
    )


def _resolved_context(merged: Merged, resolution: Resolution, host: HostFacts) -> Context:
    def origin(path: KeyPath) -> Origin | None:
        return resolution.provenance.get(dotted(path)) or merged.locate(path)

    return Context(origin=origin, explicit=merged.explicit, installed=host.installed)


def _raise_errors(findings: Sequence[Finding], warnings: Sequence[SpecIssue]) -> None:
    errors = [f.issue for f in findings if not f.warning]
    if errors:
        raise SpecError(sort_issues(errors), warnings=warnings)


def _warnings(earlier: list[SpecIssue], findings: Sequence[Finding]) -> tuple[SpecIssue, ...]:
    return tuple(sort_issues([*earlier, *(f.issue for f in findings if f.warning)]))


# --- the I/O wrappers -------------------------------------------------------------------------


def validate_spec(
    path: str, sets: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> Checked:
    """Check a spec file with its bases, environment and ``--set`` layers; opens no data."""
    environ = os.environ if environ is None else environ
    return check_layers(load_layers(path, sets, environ), read_host(environ, full=False))


def compile_spec(
    path: str, sets: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> Lock:
    """Compile a spec file (with its bases, ``PTYCHO__*`` variables and ``--set`` arguments)
    against its data and this host."""
    environ = os.environ if environ is None else environ
    return compile_layers(load_layers(path, sets, environ), read_host(environ))


def compile_layers(layers: Sequence[Layer], host: HostFacts) -> Lock:
    """Compile loaded layers: read the data they name, then :func:`compile_run`."""
    checked = check_layers(layers, host)
    spec = absolute_paths(checked.spec, checked.merged, host.cwd)
    _check_files_exist(spec, checked.merged)
    return _resolve_checked(layers, checked, read_inputs(input_paths(spec)), host)


_ROLE_KEYS: Final = MappingProxyType(
    {
        "train": "data.train_file",
        "test": "data.test_file",
        "probe": "data.simulate.probe",
        "product": "data.ptychodus.product_file",
        "diffraction": "data.ptychodus.diffraction_file",
        "bundle": "inference.bundle",
    }
)


def _check_files_exist(spec: Spec, merged: Merged) -> None:
    """A missing input file is a spec mistake, reported at the line that names it."""
    wanted = input_paths(spec)
    issues = [
        SpecIssue(
            _ROLE_KEYS[role],
            f"no such file: {path}",
            merged.locate(key_path(_ROLE_KEYS[role])),
        )
        for role, path in wanted.paths.items()
        if not os.path.isfile(path)
    ]
    if issues:
        raise SpecError(sort_issues(issues))
