"""Continued decoding: answers whose first drawn token is not a bare letter are decoded further,
step by step, with the same keyed sampler as the first token (:mod:`compbias.inference.sampling`),
so a continuation depends only on (seed, item, step) and the model, never on its batch. MLX is
imported only when a continuation runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    #: pairs continued together (at most one forward row each); default ``max_batch``
    chunk_pairs: int = 0
    #: pairs with the same tokens so far share a forward row (else one row per pair throughout)
    share_rows: bool = True
    _model: Any = field(default=None, init=False)
    _tok: Any = field(default=None, init=False)
    _letter_of: dict[int, str] = field(default_factory=dict, init=False)

    def __post_init__(self):
        self.chunk_pairs = self.chunk_pairs or self.max_batch

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
        perms = [tuple(prompts.permutation(self.spec.option_order, s, r["item_id"])) for r, s in zip(rows, seeds)]
        prompt_of: dict[tuple[str, tuple[int, ...]], int] = {}
        members: list[list[int]] = []
        for j, (row, perm) in enumerate(zip(rows, perms)):
            k = prompt_of.setdefault((row["item_id"], perm), len(members))
            if k == len(members):
                members.append([])
            members[k].append(j)
        ids = prompts.render_all(
            tok, [prompts.messages(rows[m[0]], perms[m[0]], self.spec.system, self.spec.user) for m in members]
        )
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
            )
            for j, outcome in zip(pairs, self._outcomes(toks, [firsts[j] for j in pairs])):
                out[j] = outcome
        return out

    def continue_batch(
        self, batch, rows: Sequence[int], item_ids: Sequence[str], seeds: Sequence[int], firsts: Sequence[int | None]
    ) -> list[tuple[str | None, str | None]]:
        """(text, letter) per pair, as :meth:`decode_pairs` gives them, continued from a batch
        of the prompt pass that kept its KV cache (:class:`compbias.inference.scoring.PromptBatch`):
        pair ``j`` continues the batch's row ``rows[j]``, so no prompt runs again."""
        from compbias.inference.scoring import continuation_cache

        model, _ = self._ensure()
        # room for every step's token, so that no step grows (copies) the rows' cache
        cache_of = lambda r: continuation_cache(batch, r, room=self.max_tokens)  # noqa: E731
        toks = self._continue(model, batch.logits, cache_of, rows, item_ids, seeds, firsts)
        return self._outcomes(toks, firsts)

    def _outcomes(self, toks: Sequence[list[int]], firsts: Sequence[int | None]) -> list[tuple[str | None, str | None]]:
        """(text, letter) of each pair's tokens: a bare letter the decoder drew itself as the
        first token is a first-token answer; anything else is decoded text."""
        out = []
        for tk, first in zip(toks, firsts):
            first_letter = first is None and len(tk) == 1 and tk[0] in self._letter_of
            out.append((None, self._letter_of[tk[0]]) if first_letter else (self._tok.decode(tk), None))
        return out

    def _decode_batch(
        self,
        model,
        ids: list[list[int]],
        source: list[int],
        item_ids: list[str],
        seeds: list[int],
        firsts: list[int | None],
    ) -> list[list[int]]:
        """Tokens of every pair: one prompt pass over ``ids``, then the pairs (their prompt's row
        ``source``) continued from its cache (:meth:`_continue`)."""
        import mlx.core as mx
        from mlx_lm.models.cache import BatchKVCache

        from compbias.inference.scoring import logits_at

        width = max(len(t) for t in ids)
        pad = [width - len(t) for t in ids]
        tokens = mx.array([[0] * p + t for p, t in zip(pad, ids)])
        cache = [BatchKVCache(pad) for _ in model.layers]
        logits = logits_at(model, tokens, cache, mx.full((len(ids), 1, 1), width - 1))

        whole = source == list(range(len(ids))) and len(source) <= self.chunk_pairs

        def rows_of(rows: list[int]) -> list:
            if whole and list(rows) == list(range(len(ids))):  # decode in place (not reused)
                return cache
            sub = []
            for layer in cache:
                copy = BatchKVCache([0] * len(ids))
                copy.state = layer.state
                sub.append(copy)
            take_rows(sub, rows, pad)  # gathers rows into new arrays; ``cache`` is unchanged
            return sub

        return self._continue(model, logits, rows_of, source, item_ids, seeds, firsts)

    def _continue(self, model, logits, cache_of, source, item_ids, seeds, firsts) -> list[list[int]]:
        """Tokens of every pair, continuing row ``source[j]`` of the prompts' ``logits``.

        First every pair's first token: the scores' (``firsts``) or drawn here, in chunks of at
        most ``chunk_pairs`` rows. Many answers end there (a bare letter the scores could not
        draw, or the end of text), so only then are the pairs that go on cut into chunks of at
        most ``chunk_pairs``, each continuing from ``cache_of(rows)``, the KV cache (mlx_lm
        BatchKVCache per layer) of its prompt rows: the decode steps run full chunks however few
        answers go on. A pair's tokens depend on its keys (seed, item, step) and its logits only."""
        out, live = self._first_tokens(logits, source, item_ids, seeds, firsts)
        for c in range(0, len(live), self.chunk_pairs):
            part = live[c : c + self.chunk_pairs]
            rows = sorted({source[j] for j in part})
            at = {r: i for i, r in enumerate(rows)}
            got = self._steps(
                model,
                lambda used, rows=rows: cache_of([rows[u] for u in used]),
                [at[source[j]] for j in part],
                [item_ids[j] for j in part],
                [seeds[j] for j in part],
                [out[j][0] for j in part],
            )
            for j, tokens in zip(part, got):
                out[j] = tokens
        return out

    def _first_tokens(self, logits, source, item_ids, seeds, firsts) -> tuple[list[list[int]], list[int]]:
        """Each pair's first token (``firsts[j]``, or drawn from row ``source[j]`` of ``logits``)
        as a one-token list, empty at the end of text, and the pairs that go on past it (in
        order): none when ``max_tokens`` is 1, never one whose drawn token is a bare letter."""
        from compbias.inference.scoring import gather_rows

        out = [[] if f is None else [f] for f in firsts]
        todo = [j for j, f in enumerate(firsts) if f is None]
        for c in range(0, len(todo), self.chunk_pairs):
            part = todo[c : c + self.chunk_pairs]
            rows = gather_rows(logits, [source[j] for j in part])
            drawn = next_tokens(
                self.rng, rows, self.temperature, [seeds[j] for j in part], [item_ids[j] for j in part], 0
            )
            for j, t in zip(part, drawn.tolist()):
                out[j] = [t]
        eos, live = self._eos(), []
        for j, o in enumerate(out):
            if o[0] in eos:
                out[j] = []
            elif self.max_tokens > 1 and (firsts[j] is not None or o[0] not in self._letter_of):
                live.append(j)
        return out, live

    def _eos(self) -> set[int]:
        return set(getattr(self._tok, "eos_token_ids", None) or [self._tok.eos_token_id])

    def _steps(self, model, cache_for, node, item_ids, seeds, firsts) -> list[list[int]]:
        """Tokens of pairs that go on past their first tokens ``firsts``, up to ``max_tokens`` in
        all, pair ``j`` continuing prompt row ``node[j]``; ``cache_for(rows)`` gives the KV cache
        of those rows, built once, with room for every step.

        With ``share_rows``, pairs whose tokens so far are the same (seeds of one item that drew
        the same tokens) share one row of the next forward: the rows of a step are the distinct
        (row, token) continuations of unfinished pairs. Otherwise each pair keeps its row to the
        end. Every pair samples with its own keys (seed, item, step) either way.
        """
        import mlx.core as mx

        from compbias.inference.scoring import gather_rows

        eos = self._eos()
        n = len(item_ids)
        out = [[f] for f in firsts]
        done = [False] * n
        nxt = dict(enumerate(firsts))
        if self.share_rows:
            used = sorted(set(node))
            at = {r: i for i, r in enumerate(used)}
            node = [at[r] for r in node]
        else:
            used = list(node)
        cache = cache_for(used)
        pads = cache[0].left_padding.tolist() if self.share_rows else []  # the same in every layer
        for step in range(1, self.max_tokens):
            if self.share_rows:
                branch: dict[tuple[int, int], int] = {}
                for j in range(n):
                    if not done[j]:
                        node[j] = branch.setdefault((node[j], nxt[j]), len(branch))
                pads = take_rows(cache, [r for r, _ in branch], pads)  # one row per distinct continuation
                logits = model(mx.array([t for _, t in branch])[:, None], cache=cache)[:, -1]
                live = [j for j in range(n) if not done[j]]
                rows = gather_rows(logits, [node[j] for j in live])
            else:  # every pair keeps its row, finished ones too
                logits = model(mx.array([nxt[j] for j in range(n)])[:, None], cache=cache)[:, -1]
                live, rows = list(range(n)), logits
            drawn = next_tokens(
                self.rng, rows, self.temperature, [seeds[j] for j in live], [item_ids[j] for j in live], step
            )
            nxt = dict(zip(live, drawn.tolist()))
            for j in live:
                if not done[j]:
                    if nxt[j] in eos:
                        done[j] = True
                    else:
                        out[j].append(nxt[j])
            if all(done):
                break
        return out


def take_rows(cache: Sequence, rows: Sequence[int], pads: Sequence[int]) -> list[int]:
    """``BatchKVCache.filter(rows)`` on every layer of ``cache`` (rows repeated or dropped), with
    the rows' left padding ``pads`` known on the host, so that no layer waits for the device to
    read it back (mlx_lm's filter does); returns the new rows' padding. As there, the padding
    all rows share is trimmed."""
    import mlx.core as mx

    idx = mx.array(list(rows))
    pads = [pads[r] for r in rows]
    trim = min(pads)
    for c in cache:
        c.keys, c.values = c.keys[idx], c.values[idx]
        c.offset, c.left_padding = c.offset[idx], c.left_padding[idx]
        if trim > 0:
            c.keys, c.values = c.keys[..., trim:, :], c.values[..., trim:, :]
            c._idx -= trim
            c.left_padding -= trim
    return [p - trim for p in pads]
