"""Training loops of every stage of the pipeline and the start-up runtime decisions they rely on."""

from metafgnet.training.batches import (
    BatchStream,
    endless,
    split_pair,
    target_pairs,
    to_device,
    train_loader,
)
from metafgnet.training.checkpointing import (
    Checkpointer,
    CheckpointWarning,
    TrainingInterrupted,
    remove_checkpoints,
)
from metafgnet.training.meta_loop import (
    RUNNING_STATS,
    build_meta_optimizer,
    meta_step,
    meta_train,
    subset_schedule,
)
from metafgnet.training.monitor import NonFiniteError, WindowMean, fetch_finite, grad_norm
from metafgnet.training.optim import (
    StepDecay,
    build_sgd,
    param_groups,
    scaled_schedule,
    set_grads,
)
from metafgnet.training.plain import FitResult, finetune, joint_train, pretrain
from metafgnet.training.runtime import (
    AutocastFactory,
    LoopRuntime,
    derive_seed,
    make_autocast,
    prepare_model,
    resolve_device,
    seed_everything,
    setup_runtime,
)

__all__ = [
    "RUNNING_STATS",
    "AutocastFactory",
    "BatchStream",
    "CheckpointWarning",
    "Checkpointer",
    "TrainingInterrupted",
    "FitResult",
    "LoopRuntime",
    "NonFiniteError",
    "StepDecay",
    "WindowMean",
    "build_sgd",
    "derive_seed",
    "endless",
    "fetch_finite",
    "finetune",
    "grad_norm",
    "joint_train",
    "make_autocast",
    "build_meta_optimizer",
    "meta_step",
    "meta_train",
    "param_groups",
    "prepare_model",
    "pretrain",
    "remove_checkpoints",
    "resolve_device",
    "scaled_schedule",
    "seed_everything",
    "set_grads",
    "setup_runtime",
    "split_pair",
    "subset_schedule",
    "target_pairs",
    "to_device",
    "train_loader",
]
