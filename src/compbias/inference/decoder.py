"""Continued decoding: answers whose first drawn token is not a bare letter are decoded further,
step by step, with the same keyed sampler as the first token (:mod:`compbias.inference.sampling`),
so a continuation depends only on (seed, item, step) and the model, never on its batch. MLX is
imported only when a continuation runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compbias.inference import prompts
from compbias.inference.prompts import PromptSpec
from compbias.inference.sampling import next_tokens


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
        """(text, letter) per row of ``rows`` for ``seed`` (:meth:`decode_pairs` with one seed)."""
        return self.decode_pairs(rows, [seed] * len(rows), firsts)

    def decode_pairs(
        self, rows: Sequence[dict], seeds: Sequence[int], firsts: Sequence[int | None]
    ) -> list[tuple[str | None, str | None]]:
        """(text, letter) per (row, seed) pair. ``firsts`` holds each pair's first token when
        the scores already determined it; None: the decoder draws it from the full distribution,
        and when that token is a bare letter the answer is that letter (``text`` None), exactly
        as if the scores had drawn it. Otherwise ``letter`` is None and ``text`` the decoded
        continuation.

        Each distinct prompt (item and option order) runs once, in left-padded batches
        (mlx_lm's BatchKVCache); its cache rows are then repeated for every seed that continues
        it, so several seeds of an item cost one prompt pass. Every step samples each pair with
        its own keys (seed, item, step), so a text depends on neither its batch nor the other
        seeds decoded with it.
        """
        from compbias.inference.scoring import batches

        model, tok = self._ensure()
        letter_of = self._letter_of
        perms = [tuple(prompts.permutation(self.spec.option_order, s, r["item_id"])) for r, s in zip(rows, seeds)]
        prompt_of: dict[tuple[str, tuple[int, ...]], int] = {}
        members: list[list[int]] = []
        for j, (row, perm) in enumerate(zip(rows, perms)):
            k = prompt_of.setdefault((row["item_id"], perm), len(members))
            if k == len(members):
                members.append([])
            members[k].append(j)
        ids = [
            prompts.render(tok, prompts.messages(rows[m[0]], perms[m[0]], self.spec.system, self.spec.user))
            for m in members
        ]
        out: list[tuple[str | None, str | None]] = [(None, None)] * len(rows)
        for idx in batches([len(t) for t in ids], self.batch_tokens, self.max_batch):
            pairs = [j for i in idx for j in members[i]]
            source = [b for b, i in enumerate(idx) for _ in members[i]]
            toks = self._decode_batch(
                model,
                [ids[i] for i in idx],
                source,
                [rows[j]["item_id"] for j in pairs],
                [seeds[j] for j in pairs],
                [firsts[j] for j in pairs],
                letter_of,
            )
            for j, tk in zip(pairs, toks):
                first_letter = firsts[j] is None and len(tk) == 1 and tk[0] in letter_of
                out[j] = (None, letter_of[tk[0]]) if first_letter else (tok.decode(tk), None)
        return out

    def _decode_batch(
        self,
        model,
        ids: list[list[int]],
        source: list[int],
        item_ids: list[str],
        seeds: list[int],
        firsts: list[int | None],
        letter_of: Mapping[int, str],
    ) -> list[list[int]]:
        """Tokens of every pair: one prompt pass over ``ids``, then pairs (their prompt's row
        ``source``) decoded in chunks of at most ``max_batch`` rows."""
        import mlx.core as mx
        from mlx_lm.models.cache import BatchKVCache

        from compbias.inference.scoring import logits_at

        width = max(len(t) for t in ids)
        pad = [width - len(t) for t in ids]
        tokens = mx.array([[0] * p + t for p, t in zip(pad, ids)])
        cache = [BatchKVCache(pad) for _ in model.layers]
        logits = logits_at(model, tokens, cache, mx.full((len(ids), 1, 1), width - 1))
        if source == list(range(len(ids))):  # one pair per prompt: decode in place
            return self._steps(model, logits, cache, item_ids, seeds, firsts, letter_of)
        out: list[list[int]] = []
        for c in range(0, len(source), self.max_batch):
            rows = mx.array(source[c : c + self.max_batch])
            sub = []
            for layer in cache:
                copy = BatchKVCache([0] * len(ids))
                copy.state = layer.state
                copy.filter(rows)  # gathers (repeats) rows into new arrays; ``layer`` is unchanged
                sub.append(copy)
            part = slice(c, c + self.max_batch)
            out += self._steps(model, logits[rows], sub, item_ids[part], seeds[part], firsts[part], letter_of)
        return out

    def _steps(self, model, logits, cache, item_ids, seeds, firsts, letter_of) -> list[list[int]]:
        """Sample up to ``max_tokens`` steps from ``logits`` and the prompt ``cache``, one row per pair."""
        import mlx.core as mx

        eos = set(getattr(self._tok, "eos_token_ids", None) or [self._tok.eos_token_id])
        out: list[list[int]] = [[] for _ in item_ids]
        done = [False] * len(item_ids)
        for step in range(self.max_tokens):
            nxt = next_tokens(self.rng, logits, self.temperature, seeds, item_ids, step)
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
