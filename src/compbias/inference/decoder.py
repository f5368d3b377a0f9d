"""Continued decoding: answers whose first drawn token is not a bare letter are decoded further,
step by step, with the same keyed sampler as the first token (:mod:`compbias.inference.sampling`),
so a continuation depends only on (seed, item, step) and the model, never on its batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compbias.inference import prompts
from compbias.inference.prompts import PromptSpec
from compbias.inference.sampling import next_tokens
from compbias.inference.scoring import batches, logits_at


@dataclass
class Decoder:
    """Continues answers whose first drawn token is not a bare letter, with the same keyed
    sampler (``rng``). The model is loaded only when the first continuation is needed."""

    load: Callable[[], tuple[Any, Any]]
    spec: PromptSpec
    temperature: float
    max_tokens: int
    batch_tokens: int = 1024
    max_batch: int = 16
    rng: str = "gumbel"
    _model: Any = field(default=None, init=False)
    _tok: Any = field(default=None, init=False)
    _letter_of: dict[int, str] = field(default_factory=dict, init=False)

    def _ensure(self):
        if self._model is None:
            from compbias.inference.sampling import letter_token_ids

            self._model, self._tok = self.load()
            self._letter_of = {i: L for L, ids in letter_token_ids(self._tok).items() for i in ids}
        return self._model, self._tok

    def decode(
        self, rows: Sequence[dict], seed: int, firsts: Sequence[int | None]
    ) -> list[tuple[str | None, str | None]]:
        """(text, letter) per row of ``rows`` for ``seed``. ``firsts`` holds each row's first
        token when the scores already determined it; None: the decoder draws it from the full
        distribution, and when that token is a bare letter the answer is that letter
        (``text`` None), exactly as if the scores had drawn it. Otherwise ``letter`` is None and
        ``text`` the decoded continuation.

        Prompts run in left-padded batches (mlx_lm's BatchKVCache) and every step samples each
        row with its own keys, so a text does not depend on its batch.
        """
        model, tok = self._ensure()
        letter_of = self._letter_of
        ids = [
            prompts.render(
                tok,
                prompts.messages(
                    row,
                    prompts.permutation(self.spec.option_order, seed, row["item_id"]),
                    self.spec.system,
                    self.spec.user,
                ),
            )
            for row in rows
        ]
        out: list[tuple[str | None, str | None]] = [(None, None)] * len(rows)
        for idx in batches([len(t) for t in ids], self.batch_tokens, self.max_batch):
            toks = self._decode_batch(
                model,
                [ids[i] for i in idx],
                [rows[i]["item_id"] for i in idx],
                seed,
                [firsts[i] for i in idx],
                letter_of,
            )
            for j, i in enumerate(idx):
                first_letter = firsts[i] is None and len(toks[j]) == 1 and toks[j][0] in letter_of
                out[i] = (None, letter_of[toks[j][0]]) if first_letter else (tok.decode(toks[j]), None)
        return out

    def _decode_batch(
        self,
        model,
        ids: list[list[int]],
        item_ids: list[str],
        seed: int,
        firsts: list[int | None],
        letter_of: Mapping[int, str],
    ) -> list[list[int]]:
        import mlx.core as mx
        from mlx_lm.models.cache import BatchKVCache

        width = max(len(t) for t in ids)
        pad = [width - len(t) for t in ids]
        tokens = mx.array([[0] * p + t for p, t in zip(pad, ids)])
        cache = [BatchKVCache(pad) for _ in model.layers]
        logits = logits_at(model, tokens, cache, mx.full((len(ids), 1, 1), width - 1))
        eos = set(getattr(self._tok, "eos_token_ids", None) or [self._tok.eos_token_id])
        out: list[list[int]] = [[] for _ in ids]
        done = [False] * len(ids)
        for step in range(self.max_tokens):
            nxt = next_tokens(self.rng, logits, self.temperature, seed, item_ids, step)
            if step == 0:
                nxt = np.array([f if f is not None else t for f, t in zip(firsts, nxt)])
                # a bare letter drawn here (not by the scores) is a first-token answer
                done = [f is None and t in letter_of for f, t in zip(firsts, nxt.tolist())]
                for j in np.flatnonzero(done):
                    out[j].append(int(nxt[j]))
            for j, t in enumerate(nxt.tolist()):
                if not done[j]:
                    if t in eos:
                        done[j] = True
                    else:
                        out[j].append(t)
            if all(done) or step + 1 == self.max_tokens:
                break
            logits = model(mx.array(nxt)[:, None], cache=cache)[:, -1]
        return out
