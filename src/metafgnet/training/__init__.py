"""Training loops of every stage of the pipeline and the start-up runtime decisions they rely on."""

from metafgnet.training.batches import target_pairs
from metafgnet.training.checkpointing import (
    CheckpointWarning,
    TrainingInterrupted,
    remove_checkpoints,
)
from metafgnet.training.meta_loop import (
    build_meta_optimizer,
    meta_step,
    meta_train,
    subset_schedule,
)
from metafgnet.training.monitor import NonFiniteError
from metafgnet.training.optim import scaled_schedule
from metafgnet.training.plain import finetune, joint_train, pretrain
from metafgnet.training.runtime import (
    LoopRuntime,
    derive_seed,
    make_autocast,
    prepare_model,
    seed_everything,
    setup_runtime,
)

__all__ = [
    "CheckpointWarning",
    "TrainingInterrupted",
    "LoopRuntime",
    "NonFiniteError",
    "build_meta_optimizer",
    "derive_seed",
    "finetune",
    "joint_train",
    "make_autocast",
    "meta_step",
    "meta_train",
    "prepare_model",
    "pretrain",
    "remove_checkpoints",
    "scaled_schedule",
    "seed_everything",
    "setup_runtime",
    "subset_schedule",
    "target_pairs",
]
