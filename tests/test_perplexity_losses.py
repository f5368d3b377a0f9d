"""Per-sequence losses of the perplexity jobs against mlx_lm's own evaluation loop."""

from __future__ import annotations

import numpy as np


def test_sequence_losses_are_mlx_lms_token_losses_per_sequence(tiny_model):
    """sequence_losses feeds int32 ids (the gather kernel the prompt pass compiles anyway); the
    summed per-sequence losses are exactly those of mlx_lm's eval_ppl loop on the int64 ids."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import load

    from compbias.inference.perplexity import sequence_losses

    model, _ = load(str(tiny_model))
    vocab = model.model.embed_tokens.weight.shape[0]
    data = np.random.default_rng(0).integers(0, vocab, (5, 17), dtype=np.int64)
    got = sequence_losses(model, data)  # one batch of 5, as below
    batch = mx.array(data)  # mlx_lm's eval_ppl: one batch, int64 ids
    want = nn.losses.cross_entropy(model(batch[:, :-1]).astype(mx.float32), batch[:, 1:], reduction="none")
    assert got["n_tokens"].to_list() == [16] * 5
    assert np.array_equal(got["nll_sum"].to_numpy(), np.array(want.sum(axis=1), dtype=np.float64))
