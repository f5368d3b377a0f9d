"""Unstructured pruning of MLX checkpoints: random, magnitude and Wanda (Sun et al. 2023).

Scope: every ``nn.Linear`` inside the transformer blocks (``model.layers[i]``); embeddings,
``lm_head`` and norms are never touched. A variant's settings are checked in :mod:`.spec`,
masks with exact per-layer counts come from :mod:`.masks`, the model's blocks and linears are
found and swapped in :mod:`.surgery`, Wanda calibrates block by block on the outputs of the
already-pruned blocks (:mod:`.wanda`), and :mod:`.prune` prunes a model or a checkpoint,
returning the ``pruning`` section of the checkpoint's manifest.
"""

from compbias.compress.pruning.masks import magnitude_mask, prune_mask, random_mask, wanda_mask
from compbias.compress.pruning.prune import SPARSITY_TOLERANCE, calibration_tokens, prune_checkpoint, prune_model
from compbias.compress.pruning.spec import (
    DEFAULT_DATASET,
    GRANULARITIES,
    METHODS,
    CalibrationSpec,
    PruneSpec,
    validate_spec,
)
from compbias.compress.pruning.surgery import PrunableLinear, prunable_linears

__all__ = [
    "DEFAULT_DATASET",
    "GRANULARITIES",
    "METHODS",
    "SPARSITY_TOLERANCE",
    "CalibrationSpec",
    "PrunableLinear",
    "PruneSpec",
    "calibration_tokens",
    "magnitude_mask",
    "prunable_linears",
    "prune_checkpoint",
    "prune_mask",
    "prune_model",
    "random_mask",
    "validate_spec",
    "wanda_mask",
]
