"""``ptycho_train`` and ``ptycho_inference``: PtychoPINN's command lines over run specs.

Thin by design. Each PtychoPINN flag given becomes one ``--set section.key=value`` override on a
packaged base spec (``ptycho_spec/bases/ptycho_{train,inference}.toml``, or the ``--config`` file
for ``ptycho_train``), which ``ptycho-spec run`` then compiles, locks and executes; exit codes are
``ptycho-spec``'s. ``--print-spec`` prints the equivalent spec instead, to migrate a script.

PtychoPINN's known command-line defects are not reproduced: no flag is ignored (a flag without
a spec equivalent is refused, naming why), ``--device`` never overrides ``--accelerator`` (they
must agree), every boolean flag has a ``--no-`` form, and flags left out take the spec defaults
(``specs/spec-v1.md``), the same for every entry point.
Deprecated flags (``--n_images``, ``--device``, ``--disable_mlflow``) warn, naming the key that
replaces them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import tomli_w
from attrs import field, frozen

from ptycho_spec.bases import base_spec
from ptycho_spec.cli import _add_sets, print_spec_error
from ptycho_spec.cli import main as cli_main
from ptycho_spec.errors import SpecError, UsageError


@frozen(kw_only=True)
class Flag:
    """One PtychoPINN flag: its spellings, the spec key it sets, and how.

    ``kind``: ``path``/``str``/``int``/``float`` take a value, ``bool`` is a switch with a
    ``--no-`` form, ``switch`` is a flag without value meaning True. ``values`` translates the
    given value (a missing translation is refused); ``also`` holds further settings the flag
    implies; ``deprecated`` names the replacement; ``refused`` says why there is no equivalent.
    """

    names: tuple[str, ...]
    key: str | None = None
    kind: str = "str"
    values: Mapping[Any, Any] | None = None
    also: Mapping[str, Any] = field(factory=dict)
    deprecated: str | None = None
    refused: str | None = None
    required: bool = False
    help: str = ""


def _dest(name: str) -> str:
    return name.lstrip("-").replace("-", "_")


def _refused(names: tuple[str, ...], why: str) -> Flag:
    return Flag(names=names, kind="any", refused=why)


_QUIET = {True: False, False: True}  # --quiet → enable_progress_bar = false
_DOMAIN = {"count_intensity": "counts", "normalized_amplitude": "amplitude"}

# The flags both commands take: where the run goes, how many groups, and how it executes.
_COMMON_FLAGS: Final = (
    Flag(names=("--output_dir",), key="run.output_dir", kind="path", required=True),
    Flag(names=("--n_groups",), key="data.n_groups", kind="int"),
    Flag(
        names=("--n_images",),
        key="data.n_groups",
        kind="int",
        deprecated="--n_groups (data.n_groups)",
    ),
    Flag(names=("--accelerator", "--torch-accelerator"), key="execution.accelerator"),
    Flag(
        names=("--device",),
        key="execution.accelerator",
        values={"cpu": "cpu", "cuda": "cuda"},
        deprecated="--accelerator (execution.accelerator)",
    ),
    Flag(names=("--num-workers", "--torch-num-workers"), key="execution.num_workers", kind="int"),
    Flag(names=("--quiet",), key="execution.enable_progress_bar", kind="bool", values=_QUIET),
    Flag(
        names=("--measurement-domain",),
        key="data.measurement",
        values=_DOMAIN,
        help="count_intensity → counts, normalized_amplitude → amplitude",
    ),
    _refused(
        ("--scale-contract-version", "--profile"),
        "ptycho-spec has one scaling contract (specs/physics-contract.md)",
    ),
    _refused(("--log-patch-stats", "--patch-stats-limit"), "patch statistics are not logged"),
)

TRAIN_FLAGS: Final = (
    Flag(names=("--train_data_file",), key="data.train_file", kind="path"),
    Flag(
        names=("--test_data_file",),
        key="data.test_file",
        kind="path",
        also={"run.task": "train+infer"},
        help="also reconstructs it after training (run.task = train+infer)",
    ),
    Flag(names=("--nepochs", "--max_epochs", "--epochs"), key="training.nepochs", kind="int"),
    Flag(names=("--gridsize",), key="model.gridsize", kind="int"),
    Flag(names=("--batch_size",), key="training.batch_size", kind="int"),
    Flag(names=("--N",), key="model.N", kind="int"),
    Flag(names=("--nphotons",), key="training.nphotons", kind="float"),
    Flag(names=("--n_subsample",), key="data.n_subsample", kind="int"),
    Flag(names=("--neighbor_count", "--K"), key="data.neighbor_count", kind="int"),
    Flag(names=("--model_type",), key="model.model_type"),
    Flag(names=("--n_filters_scale",), key="model.n_filters_scale", kind="int"),
    Flag(names=("--amp_activation",), key="model.amp_activation"),
    Flag(names=("--probe_scale",), key="model.probe_scale", kind="float"),
    Flag(names=("--gaussian_smoothing_sigma",), key="model.gaussian_smoothing_sigma", kind="float"),
    Flag(names=("--object_big",), key="model.object_big", kind="bool"),
    Flag(names=("--probe_big",), key="model.probe_big", kind="bool"),
    Flag(names=("--pad_object",), key="model.pad_object", kind="bool"),
    Flag(names=("--probe_trainable",), key="model.probe_trainable", kind="bool"),
    Flag(
        names=("--intensity_scale_trainable",), key="model.intensity_scale_trainable", kind="bool"
    ),
    Flag(names=("--sequential_sampling",), key="data.sequential_sampling", kind="bool"),
    Flag(names=("--mae_weight",), key="training.mae_weight", kind="float"),
    Flag(names=("--nll_weight",), key="training.nll_weight", kind="float"),
    Flag(names=("--realspace_weight",), key="training.realspace_weight", kind="float"),
    Flag(names=("--torch-loss-mode",), key="training.loss"),
    Flag(names=("--probe-mask",), key="model.probe_mask", kind="bool"),
    Flag(
        names=("--deterministic", "--torch-deterministic"),
        key="execution.deterministic",
        kind="bool",
    ),
    Flag(
        names=("--learning-rate", "--torch-learning-rate"),
        key="training.learning_rate",
        kind="float",
    ),
    Flag(names=("--scheduler", "--torch-scheduler"), key="training.scheduler"),
    Flag(names=("--torch-plateau-factor",), key="training.plateau_factor", kind="float"),
    Flag(names=("--torch-plateau-patience",), key="training.plateau_patience", kind="int"),
    Flag(names=("--torch-plateau-min-lr",), key="training.plateau_min_lr", kind="float"),
    Flag(names=("--torch-plateau-threshold",), key="training.plateau_threshold", kind="float"),
    Flag(
        names=("--accumulate-grad-batches", "--torch-accumulate-grad-batches"),
        key="execution.accumulate_grad_batches",
        kind="int",
    ),
    Flag(names=("--logger", "--torch-logger"), key="execution.logger"),
    Flag(
        names=("--disable_mlflow",),
        key="execution.logger",
        kind="switch",
        values={True: "none"},
        also={"execution.enable_progress_bar": False},
        deprecated="--logger none (execution.logger) and --quiet (execution.enable_progress_bar)",
    ),
    Flag(
        names=("--enable-checkpointing", "--torch-enable-checkpointing"),
        key="execution.enable_checkpointing",
        kind="bool",
    ),
    Flag(
        names=("--disable-checkpointing",),
        key="execution.enable_checkpointing",
        kind="switch",
        values={True: False},
    ),
    Flag(
        names=("--checkpoint-save-top-k", "--torch-checkpoint-save-top-k"),
        key="execution.checkpoint_save_top_k",
        kind="int",
    ),
    Flag(names=("--checkpoint-monitor",), key="execution.checkpoint_monitor"),
    Flag(names=("--checkpoint-mode",), key="execution.checkpoint_mode"),
    Flag(names=("--early-stop-patience",), key="execution.early_stop_patience", kind="int"),
    Flag(
        names=("--backend",),
        key=None,
        values={"pytorch": None},
        help="only pytorch: ptycho-spec is a PyTorch backend",
    ),
    *_COMMON_FLAGS,
    _refused(
        ("--probe-mask-sigma", "--probe-mask-diameter"),
        "the probe mask is the soft disk of diameter N/2 (model.probe_mask)",
    ),
    _refused(
        (
            "--torch-recon-log-every-n-epochs",
            "--torch-recon-log-num-patches",
            "--torch-recon-log-fixed-indices",
            "--torch-recon-log-stitch",
            "--torch-recon-log-max-stitch-samples",
        ),
        "reconstructions are not logged during training (the run writes reconstruction.npz)",
    ),
    _refused(("--subsample_seed",), "every seed derives from run.seed (--set run.seed=...)"),
    _refused(
        ("--ptycho_dir",),
        "legacy JSON configs: convert a PtychoPINN YAML config with `ptycho-spec migrate`",
    ),
)

INFERENCE_FLAGS: Final = (
    Flag(names=("--model_path",), key="inference.bundle", kind="bundle", required=True),
    Flag(
        names=("--test_data", "--test_data_file"), key="data.test_file", kind="path", required=True
    ),
    Flag(names=("--inference-batch-size",), key="inference.batch_size", kind="int"),
    Flag(
        names=("--patch-weighting",),
        key="inference.stitch",
        values={"uniform": "position", "probe": "probe"},
        help="position-aware shift-and-average stitching, each patch pixel weighted equally "
        "(uniform) or by the probe's intensity |P|² (probe)",
    ),
    *_COMMON_FLAGS,
    _refused(("--varpro-scaling",), "one scaling contract: the model's from the bundle"),
    _refused(
        ("--probe-mask", "--no-probe-mask", "--probe-mask-sigma", "--probe-mask-diameter"),
        "model settings come from the model bundle in an inference run",
    ),
    _refused(
        ("--run_id", "--infer_dir", "--file_index", "--config"),
        "PtychoPINN's legacy MLflow inference mode has no equivalent",
    ),
)


# --- parsing ----------------------------------------------------------------------------------


def build_parser(prog: str, flags: Sequence[Flag], *, config: bool) -> argparse.ArgumentParser:
    """The parser of one command: its flags, ``--config`` (train), ``--set``, ``--force`` and
    ``--print-spec``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"PtychoPINN's {prog} over a ptycho-spec run spec (each flag is a --set).",
        allow_abbrev=False,  # a misspelt flag is an error, not a guess
    )
    for flag in flags:
        _add_flag(parser, flag)
    if config:
        parser.add_argument(
            "--config", metavar="SPEC", help="a spec or PtychoPINN YAML config to start from"
        )
    _add_sets(parser)  # any other setting, as for ptycho-spec run
    parser.add_argument("--force", action="store_true", help="overwrite a completed run directory")
    parser.add_argument(
        "--print-spec", action="store_true", help="print the equivalent spec instead of running"
    )
    return parser


def _add_flag(parser: argparse.ArgumentParser, flag: Flag) -> None:
    """Each spelling is its own argument, so two spellings that disagree are caught; one
    spelling of a required flag must be given."""
    names = parser.add_mutually_exclusive_group(required=True) if flag.required else parser
    for name in flag.names:
        common: dict[str, Any] = {"dest": _dest(name), "default": None, "help": _help(flag)}
        if flag.kind == "bool":
            names.add_argument(name, action=argparse.BooleanOptionalAction, **common)
        elif flag.kind == "switch":
            names.add_argument(name, action="store_const", const=True, **common)
        elif flag.kind == "any":
            names.add_argument(name, nargs="?", const=True, **common)
        else:
            names.add_argument(name, type=_TYPES[flag.kind], **common)


_TYPES: Final[Mapping[str, Callable[[str], Any]]] = {
    "str": str,
    "path": os.path.abspath,
    "bundle": lambda p: (
        os.path.join(os.path.abspath(p), "model.bundle") if os.path.isdir(p) else os.path.abspath(p)
    ),
    "int": int,
    "float": float,
}


def _help(flag: Flag) -> str:
    if flag.refused:
        return f"refused: {flag.refused}"
    target = f"→ {flag.key}" if flag.key else ""
    extra = f"; deprecated, use {flag.deprecated}" if flag.deprecated else ""
    return " ".join(x for x in (target, flag.help) if x) + extra


@frozen(kw_only=True)
class Setting:
    """One spec setting a flag makes: ``key`` (dotted) = ``value``, from ``flag``."""

    key: str
    value: Any
    flag: str


def translate(args: argparse.Namespace, flags: Sequence[Flag]) -> tuple[list[Setting], list[str]]:
    """The settings the given flags make, and the deprecation warnings; a refused flag, an
    untranslatable value or two flags disagreeing on one key raise ``UsageError``."""
    given = [
        (flag, name, getattr(args, _dest(name)))
        for flag in flags
        for name in flag.names
        if getattr(args, _dest(name)) is not None
    ]
    refused = [
        f"{name}: no spec equivalent: {flag.refused}" for flag, name, _ in given if flag.refused
    ]
    if refused:
        raise UsageError("; ".join(refused))
    settings = [s for flag, name, value in given for s in _settings(flag, name, value)]
    _check_agreement(settings)
    warnings = [
        f"{name} is deprecated; use {flag.deprecated}" for flag, name, _ in given if flag.deprecated
    ]
    return settings, warnings


def _settings(flag: Flag, name: str, value: Any) -> list[Setting]:
    if flag.values is not None:
        if value not in flag.values:
            allowed = ", ".join(map(str, flag.values))
            msg = f"{name} {value}: no spec equivalent (accepted: {allowed})"
            raise UsageError(msg)
        value = flag.values[value]
    if flag.key is None:
        return []
    main = Setting(key=flag.key, value=value, flag=name)
    return [main, *(Setting(key=k, value=v, flag=name) for k, v in flag.also.items())]


def _check_agreement(settings: Sequence[Setting]) -> None:
    """Two flags for one key must agree (``--device cuda --accelerator cpu`` is a mistake)."""
    first: dict[str, Setting] = {}
    for setting in settings:
        seen = first.setdefault(setting.key, setting)
        if seen.value != setting.value:
            msg = (
                f"{seen.flag} and {setting.flag} disagree on {setting.key} "
                f"({seen.value!r} vs {setting.value!r}); give one"
            )
            raise UsageError(msg)


def set_arguments(settings: Sequence[Setting]) -> list[str]:
    """``section.key=value # --flag`` strings, values in TOML syntax; the TOML comment names
    the flag, so the lock's provenance and any diagnostic say which flag set the key."""
    return [f"{s.key}={tomli_w.dumps({'v': s.value})[4:].strip()} # {s.flag}" for s in settings]


# --- running and printing -------------------------------------------------------------------


def equivalent_spec(target: str, sets: Sequence[str]) -> str:
    """The spec that ``target`` with ``sets`` amounts to: its settings (paths made absolute),
    the overrides folded in, as TOML."""
    from ptycho_spec.load import read_spec, set_layer
    from ptycho_spec.resolve import PATH_FIELDS, absolute_path
    from ptycho_spec.tree import deep_copy, get_in, iter_leaves, set_in

    layer = read_spec(target)
    tree = deep_copy(layer.tree)
    folder = os.path.dirname(os.path.abspath(target))
    for path in PATH_FIELDS:
        value = get_in(tree, path)
        if isinstance(value, str):
            set_in(tree, path, absolute_path(path, value, folder))
    overrides = set_layer(sets)
    for path, value in iter_leaves(overrides.tree if overrides else {}):
        set_in(tree, path, value)
    head: dict[str, Any] = {"spec_version": 1}
    if layer.extends:
        head["extends"] = [os.path.normpath(os.path.join(folder, e)) for e in layer.extends]
    note = "# Equivalent spec of a PtychoPINN command line (paths are absolute).\n"
    return note + tomli_w.dumps({**head, **tree})


def _run_command(
    prog: str, flags: Sequence[Flag], argv: Sequence[str] | None, *, config: bool
) -> int:
    """Translate, then print the equivalent spec or run it as ``ptycho-spec run`` would."""
    args = build_parser(prog, flags, config=config).parse_args(argv)
    try:
        settings, warnings = translate(args, flags)
        target = (args.config if config else None) or str(base_spec(prog))
        sets = [*set_arguments(settings), *args.sets]
        text = equivalent_spec(target, sets) if args.print_spec else None
    except SpecError as exc:
        print_spec_error(exc)
        return exc.exit_code
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if text is not None:
        sys.stdout.write(text)
        return 0
    forced = ["--force"] if args.force else []
    return cli_main(["run", target, *(f"--set={s}" for s in sets), *forced])


def train_main(argv: Sequence[str] | None = None) -> int:
    """``ptycho_train``: train (and with ``--test_data_file`` reconstruct) from NPZ files."""
    return _run_command("ptycho_train", TRAIN_FLAGS, argv, config=True)


def inference_main(argv: Sequence[str] | None = None) -> int:
    """``ptycho_inference``: reconstruct an NPZ test file with a model bundle."""
    return _run_command("ptycho_inference", INFERENCE_FLAGS, argv, config=False)
