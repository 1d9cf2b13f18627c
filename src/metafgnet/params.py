"""Typed parameters: each section of ``params.yaml`` parsed once into a frozen dataclass.

Validation is done by pydantic dataclasses (``extra="forbid"``, strict types); this module
only turns pydantic's errors into messages that name the dotted key path, the allowed values and,
for unknown keys, the closest valid key ("meta.ordr: unknown key; did you mean meta.order?").
Derived values never go back into these objects: they are frozen.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import yaml
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from metafgnet.errors import UserError
from metafgnet.io import read_yaml
from metafgnet.sections import Fraction, NonNegInt, PosFloat, PosInt
from metafgnet.sections import section as _section
from metafgnet.tuning.schema import TuneParams, check_space_dim


@_section
class SyntheticParams:
    """The embedded procedural fine-grained benchmark (see ``metafgnet.data.synthetic``)."""

    seed: NonNegInt = 0
    image_size: Annotated[int, Field(ge=16, le=512)] = 32
    target_classes: Annotated[int, Field(ge=2)] = 16
    train_per_class: PosInt = 10
    test_per_class: PosInt = 20
    related_classes: NonNegInt = 24
    unrelated_classes: NonNegInt = 24
    aux_per_class: PosInt = 24
    noise: Annotated[float, Field(ge=0, le=1)] = 0.08
    pose_jitter: Fraction = 0.5
    scale_jitter: Fraction = 0.25
    detail_jitter: Fraction = 0.15


@_section
class LeakageParams:
    """Auxiliary images that copy a target image (``metafgnet.data.leakage``), found by
    ``prepare`` and written to ``leakage.json`` / ``leakage.csv`` beside the manifests."""

    # perceptual-hash bits (of 64) within which two images count as near copies
    max_distance: Annotated[int, Field(ge=0, le=64)] = 6
    drop: bool = False  # leave them out of the auxiliary set (the paper keeps them)


@_section
class DataParams:
    """Where the target and auxiliary data come from and how images are fed to the network."""

    target: Literal["synthetic", "cub", "dogs", "aircraft", "cars", "flowers"] = "synthetic"
    target_root: str = "data/prepared/synthetic/target"
    auxiliary: Literal["synthetic", "folder", "none"] = "synthetic"
    auxiliary_root: str = "data/prepared/synthetic/auxiliary"
    num_target_classes: NonNegInt = 0  # 0: take whatever the dataset has; else checked
    num_auxiliary_classes: NonNegInt = 0
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    # Seeds the validation split: a property of the data, not of a training run, so a sweep
    # over the top-level ``seed`` keeps one split (and one ``prepare``).
    split_seed: NonNegInt = 0
    image_size: Annotated[int, Field(ge=8)] = 32  # training/eval crop (paper: 224)
    resize: Annotated[int, Field(ge=8)] = 36  # shorter side before the eval crop (paper: 256)
    on_corrupt: Literal["fail", "skip"] = "fail"
    max_skipped_fraction: Fraction = 0.01
    leakage: LeakageParams = dataclasses.field(default_factory=LeakageParams)

    @model_validator(mode="after")
    def _crop_fits(self):
        if self.resize < self.image_size:
            raise ValueError(
                f"resize ({self.resize}) must be >= image_size ({self.image_size})"
            )
        return self


@_section
class ModelParams:
    backbone: Literal["small_resnet", "resnet18", "resnet34", "resnet50"] = "small_resnet"
    pretrained: Literal["none", "imagenet"] = "none"
    width: PosInt = 16  # base channel width of small_resnet (ignored by torchvision nets)


@_section
class ExecutionParams:
    """How a run is executed, never what it computes: the processes that load images, pinned
    memory, how often a loop checkpoints. Like ``tracking``, every stage may read it and none
    declares it in ``dvc.yaml``, and it is not in checkpoint fingerprints: changing it neither
    re-runs a stage nor sets a checkpoint aside."""

    num_workers: NonNegInt = 0  # loader processes (also the image checks of ``prepare``)
    prefetch_factor: PosInt = 2  # batches each loader process keeps ready
    pin_memory: bool = False  # page-locked batches for faster host-to-GPU copies (CUDA only)
    checkpoint_every: NonNegInt = 0  # steps; 0: checkpoints only on SIGTERM
    # how a stage starts nnodes x nproc processes: torchrun (one node, or by hand on every node)
    # or slurm (srun starts one torchrun agent per node of the allocation; docs/scale.md)
    launcher: Literal["torchrun", "slurm"] = "torchrun"


def schedule_problem(milestones: list[int], horizon: int, unit: str) -> str | None:
    """What is wrong with a step schedule's ``milestones`` over ``horizon`` epochs or
    iterations (the message starts with the key, ``milestones:``), or None."""
    if list(milestones) != sorted(set(milestones)):
        return f"milestones: must be strictly increasing, got {list(milestones)}"
    late = [m for m in milestones if m >= horizon]
    if late:
        return (f"milestones: {late} not below {unit} ({horizon}), so that decay would never "
                f"happen; use milestones below {horizon}, or fewer")
    return None


@_section
class OptimParams:
    """SGD schedule of a plain training stage: per-group learning rates with step milestones.

    The defaults are the ``finetune`` section's of ``params.yaml`` (``pretrain`` and ``joint``
    override theirs), except ``milestones``: a schedule fits one length only, so the class
    default is none (valid for any ``epochs``) and :class:`Params` sets ``params.yaml``'s."""

    epochs: PosInt = 40
    batch_size: PosInt = 32
    head_lr: PosFloat = 0.1
    backbone_lr: PosFloat = 0.01
    milestones: list[PosInt] = dataclasses.field(default_factory=list)  # in epochs
    lr_decay: PosFloat = 0.1
    momentum: Fraction = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4

    @model_validator(mode="after")
    def _milestones_sorted(self):
        if problem := schedule_problem(self.milestones, self.epochs, "epochs"):
            raise ValueError(problem)
        return self


@_section
class PretrainParams(OptimParams):
    """Source pretraining (stage 1). It has its own seed: the paper starts from one fixed
    pretrained source network, so a sweep over the top-level ``seed`` (the method's randomness)
    shares one pretrained model."""

    epochs: PosInt = 40
    batch_size: PosInt = 64
    backbone_lr: PosFloat = 0.1
    seed: NonNegInt = 0


@_section
class JointParams(OptimParams):
    epochs: PosInt = 20
    batch_size: PosInt = 64
    aux_weight: Annotated[float, Field(ge=0)] = 1.0


@_section
class MetaParams:
    """One MetaFGNet meta-iteration (the MetaFGNet objective; see metafgnet.training.meta_loop)."""

    order: Literal["first", "second"] = "second"
    iterations: PosInt = 300
    batch_size: PosInt = 16  # each of T_i and T_j
    aux_batch_size: PosInt = 32
    inner_lr: PosFloat = 0.01  # eta, decayed with the outer schedule
    target_head_lr: PosFloat = 0.1
    backbone_lr: PosFloat = 0.01
    source_head_lr: PosFloat = 0.01
    # in iterations; none by default, like OptimParams.milestones (Params sets params.yaml's)
    milestones: list[PosInt] = dataclasses.field(default_factory=list)
    lr_decay: PosFloat = 0.1
    momentum: Fraction = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    aux_weight: Annotated[float, Field(ge=0)] = 1.0
    update: Literal["sequential", "summed"] = "sequential"
    running_stats: Literal["extra_forward", "inner_pass", "auxiliary_only"] = "extra_forward"
    # images per micro-batch of the meta-gradient (0: off): bounded memory, same exact
    # meta-gradient (ghost batches under BatchNorm), see metafgnet.meta.microbatch
    micro_batch: NonNegInt = 0
    log_every: PosInt = 10

    @model_validator(mode="after")
    def _milestones_sorted(self):
        if problem := schedule_problem(self.milestones, self.iterations, "iterations"):
            raise ValueError(problem)
        if self.micro_batch > self.batch_size:
            raise ValueError(
                f"micro_batch ({self.micro_batch}) must be at most batch_size "
                f"({self.batch_size}); 0 turns micro-batching off")
        return self


@_section
class SelectParams:
    criterion: Literal["ratio", "threshold", "topk"] = "ratio"
    ratio: Annotated[float, Field(gt=0, le=1)] = 0.8
    threshold: float = 0.0
    topk: PosInt = 1000
    batch_size: PosInt = 256
    random_seed: NonNegInt = 0  # draws the control arm's random subset (selection.subsets)


@_section
class RuntimeParams:
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    num_threads: NonNegInt = 2  # 0: leave torch's default; pinned for CPU determinism
    amp: bool = False
    deterministic: bool = True
    cudnn_benchmark: bool = False
    channels_last: bool = False
    nproc: PosInt = 1  # processes per node (GPUs per node under CUDA)
    nnodes: PosInt = 1  # nodes: the world size is nnodes x nproc (results depend on it)


@_section
class TrackingParams:
    enabled: bool = True
    experiment: str = "metafgnet"
    offline: bool = False  # opt in to a local record when the tracking server is unreachable
    log_models: bool = True
    system_metrics: bool = True
    registered_model: str = "metafgnet-best"
    # true: stages talk to one long-lived tracking agent per pipeline execution (MLflow is
    # imported once); false: each stage process imports MLflow itself (a large import per stage)
    agent: bool = True


@_section
class Params:
    """The whole ``params.yaml``: ``Params()`` equals the committed file (a test keeps it so).

    Sections left out of a params file take these defaults whole; keys left out of a section
    take the section class's, where the step ``milestones`` are none (a schedule fits one
    length: the defaults below fit the default ``epochs`` / ``iterations`` only)."""

    seed: NonNegInt = 0
    data: DataParams = dataclasses.field(default_factory=DataParams)
    synthetic: SyntheticParams = dataclasses.field(default_factory=SyntheticParams)
    model: ModelParams = dataclasses.field(default_factory=ModelParams)
    pretrain: PretrainParams = dataclasses.field(
        default_factory=lambda: PretrainParams(milestones=[28, 36]))
    meta: MetaParams = dataclasses.field(default_factory=lambda: MetaParams(milestones=[150, 250]))
    select: SelectParams = dataclasses.field(default_factory=SelectParams)
    finetune: OptimParams = dataclasses.field(
        default_factory=lambda: OptimParams(milestones=[24, 32]))
    joint: JointParams = dataclasses.field(default_factory=lambda: JointParams(milestones=[12, 16]))
    runtime: RuntimeParams = dataclasses.field(default_factory=RuntimeParams)
    execution: ExecutionParams = dataclasses.field(default_factory=ExecutionParams)
    tracking: TrackingParams = dataclasses.field(default_factory=TrackingParams)
    tune: TuneParams = dataclasses.field(default_factory=TuneParams)

    @model_validator(mode="after")
    def _tune_space_targets(self):
        """Each ``tune.space`` key must name a tunable param, with a type and range it accepts."""
        problems = [f"tune.space.{key}: {problem}" for key, dim in self.tune.space.items()
                    if (problem := check_space_dim(self, key, dim))]
        if problems:
            raise ValueError("\n  ".join(problems))
        return self


class ParamsError(ValueError, UserError):
    """Invalid parameters; the message names every offending key path."""


def _fields_at(loc: tuple) -> list[str]:
    """Valid key names of the dataclass at ``loc`` (a path into Params)."""
    cls: Any = Params
    for part in loc:
        if get_origin(cls) is dict:  # a mapping (tune.space): any key, one value type
            cls = get_args(cls)[1]
            continue
        hints = get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            return []
        cls = hints[part]
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _format_error(err: dict) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        valid = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        where = ".".join(loc[:-1])
        hint = f"did you mean {where + '.' if where else ''}{close[0]}?" if close else (
            f"valid keys: {', '.join(valid)}")
        return f"{key}: unknown key; {hint}"
    if err["type"] == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{key} must be {allowed} (got {err['input']!r})"
    msg = err["msg"].removeprefix("Value error, ")
    if not key:
        return msg
    if isinstance(err.get("input"), dict):  # a section-level check: the message names the keys
        field, sep, rest = msg.partition(": ")
        if sep and field in err["input"]:   # ... or starts with the one key it is about
            return f"{key}.{field}: {rest}"
        return f"{key}: {msg}"
    return f"{key}: {msg} (got {err['input']!r})"


_ADAPTER = TypeAdapter(Params)


def parse_params(raw: dict) -> Params:
    """Validate a raw mapping (as read from YAML) into :class:`Params`; raises
    :class:`ParamsError` listing every invalid key with its dotted path."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params must be a mapping of sections, got {type(raw).__name__}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        lines = sorted({_format_error(e) for e in exc.errors()})
        raise ParamsError("invalid params:\n  " + "\n  ".join(lines)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate a params file; ``overrides`` (nested mapping) is merged on top."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        raw = read_yaml(path) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if overrides:
        raw = deep_merge(raw, overrides)
    return parse_params(raw)


def deep_merge(base: dict, update: dict) -> dict:
    """A new mapping: ``update`` merged into ``base`` section by section."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(params: Any) -> dict:
    """Plain nested dict of a params dataclass (for YAML, checkpoints and trackers)."""
    return dataclasses.asdict(params)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"meta": {"order": "second"}}`` -> ``{"meta.order": "second"}``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
