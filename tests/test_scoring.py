"""The prompt pass's host work: the heads of the sampling distributions and the prompts' tokens."""

import numpy as np
import pytest
from conftest import study_items

from compbias.inference.prompts import PromptSpec, messages, render, render_all
from compbias.inference.scoring import distribution_rows, top_candidates

LETTERS = {"A": [1], "B": [2], "C": [3]}


def _probs(logits: np.ndarray, temperature: float = 0.3) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _logits(rng, n: int, vocab: int, coarse: bool) -> np.ndarray:
    x = rng.standard_normal((n, vocab)).astype(np.float32) * rng.uniform(0.5, 6)
    if coarse:  # bf16-like logits: many equal values, ties at the boundary of the set
        x = np.round(x * 4) / 4
    x[:, rng.integers(0, vocab, 5)] += rng.uniform(0, 20)
    return x


def _sorted_heads(logits, temperature=0.3, top_mass=1 - 1e-6, max_top=64):
    """The heads by their definition: each whole row sorted by descending probability, ties by id."""
    p = _probs(logits, temperature)
    ids, probs = [], []
    for row in p:
        c = np.lexsort((np.arange(len(row)), -row))[:max_top]
        keep = int(np.searchsorted(np.cumsum(row[c]), top_mass)) + 1
        ids.append(c[:keep].tolist())
        probs.append(row[c][:keep].tolist())
    return ids, probs


@pytest.mark.parametrize("coarse", [False, True])
@pytest.mark.parametrize("vocab", [49152, 32064, 1000])
def test_top_candidates_are_the_largest_entries_ties_by_id(vocab, coarse):
    rng = np.random.default_rng(vocab + coarse)
    tied = 0
    for _ in range(4):
        p = _probs(_logits(rng, 40, vocab, coarse))
        got = top_candidates(p, 65)
        want = np.argpartition(np.negative(p), 64, axis=1)[:, :65]  # the set, up to ties
        for row, g, w in zip(p, got.tolist(), want.tolist()):
            assert set(g) == set(np.lexsort((np.arange(vocab), -row))[:65].tolist())
            kth = np.sort(row)[-65]
            tied += (row >= kth).sum() > 65  # entries tied at the 65th value straddle the boundary
            assert {i for i in g if row[i] > kth} == {i for i in w if row[i] > kth}
            if (row >= kth).sum() == 65:  # no ties at the 65th value: argpartition's set
                assert set(g) == set(w)
    assert (tied > 0) == coarse  # ties at the boundary exercised


@pytest.mark.parametrize("coarse", [False, True])
def test_heads_list_the_most_likely_tokens_ties_by_id(coarse):
    rng = np.random.default_rng(7)
    logits = _logits(rng, 96, 49152, coarse)
    logits[:8] = np.round(rng.standard_normal((8, 49152)) * 2) / 2  # flat rows: heads of 64 tokens
    rows = distribution_rows(logits, 0.3, LETTERS)
    assert (rows["top_ids"], rows["top_probs"]) == _sorted_heads(logits)
    assert {len(h) for h in rows["top_ids"][:8]} == {64}


@pytest.mark.realdata
def test_batched_rendering_gives_each_prompts_own_tokens(tiny_model, shared_bbq):
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(tiny_model)
    items = study_items(shared_bbq)
    spec = PromptSpec(option_order="shuffled")
    one_by_one = [render(tok, messages(row, (2, 0, 1), spec.system, spec.user)) for row in items.iter_rows(named=True)]
    batched = render_all(tok, [messages(row, (2, 0, 1), spec.system, spec.user) for row in items.iter_rows(named=True)])
    assert batched == one_by_one and len(set(map(tuple, batched))) == items.height


class _NoSystemRole:
    """A tokenizer whose template rejects a system message, as Gemma's does."""

    def apply_chat_template(self, msgs, add_generation_prompt, tokenize):
        batched = isinstance(msgs[0], list)
        for conversation in msgs if batched else [msgs]:
            if conversation[0]["role"] == "system":
                raise ValueError("System role not supported")
        encode = lambda m: [len(m[0]["content"])]  # noqa: E731
        return [encode(m) for m in msgs] if batched else encode(msgs)


def test_batched_rendering_falls_back_to_one_call_per_prompt():
    conversations = [[{"role": "system", "content": "sys"}, {"role": "user", "content": "q" * n}] for n in (1, 5)]
    assert render_all(_NoSystemRole(), conversations) == [[len("sys\n\nq")], [len("sys\n\nqqqqq")]]
    assert render_all(_NoSystemRole(), []) == []


def test_rows_with_nan_still_get_candidates():
    p = _probs(_logits(np.random.default_rng(3), 4, 49152, False))
    p[1, 100] = np.nan
    got = top_candidates(p, 65)
    assert got.shape == (4, 65) and set(got[0]) == set(np.lexsort((np.arange(49152), -p[0]))[:65].tolist())


def test_row_gathers_equal_plain_indexing():
    """gather_rows (float32 through a bfloat16 view) and the flat gathers that stand in for
    take_along_axis copy exactly the values plain indexing gives, strided inputs included."""
    import mlx.core as mx

    from compbias.inference.scoring import _at, _rolled, gather_rows

    rng = np.random.default_rng(3)
    x = mx.array(rng.standard_normal((6, 10)).astype(np.float32))
    for a in (x, x[1:, :7], x.astype(mx.bfloat16)):
        for rows in ([4, 0, 4], np.array([2], dtype=np.int64)):
            got, want = gather_rows(a, rows).astype(mx.float32), a.astype(mx.float32)
            assert np.array_equal(np.array(got), np.array(want)[np.asarray(rows)])
    h = mx.array(rng.standard_normal((3, 5, 4)).astype(np.float32))
    last = mx.array([4, 0, 2])[:, None, None]
    assert np.array_equal(np.array(_at(h, last)), np.array(mx.take_along_axis(h, last, axis=1)[:, 0]))
    keys = mx.array(rng.standard_normal((3, 2, 6, 4)).astype(np.float32))
    rolled, _ = _rolled(keys, keys, [2, 0], [5, 3], 5, 2)
    k = np.array(keys)
    for j, (r, n) in enumerate(zip([2, 0], [5, 3])):  # position t holds t - (5 - n), clipped to [0, 4]
        assert np.array_equal(np.array(rolled[j]), k[r][:, np.clip(np.arange(7) - (5 - n), 0, 4)])
