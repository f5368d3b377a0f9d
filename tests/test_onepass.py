"""One prompt pass per item for every seed: the scores job answers its seeds, and the answers
are the same as the answers job's own decoding would give."""

import subprocess
import sys

import pytest
from conftest import ROOT, study_items

from compbias.inference.answering import (
    answer_seed,
    precompute_answers,
    precomputed_seeds,
    score_and_answer,
    score_items,
)
from compbias.inference.decoder import Decoder
from compbias.inference.jobs import group_seeds
from compbias.inference.prompts import PromptSpec
from compbias.inference.runtime import decoder_options, load_model, resolve_runtime
from compbias.io import write_parquet

SEEDS = [42, 123, 7]


@pytest.fixture(scope="module")
def loaded(tiny_model, shared_bbq):
    rt = resolve_runtime()
    model, tok, _ = load_model(tiny_model, rt)
    return model, tok, rt, study_items(shared_bbq)


def _decoder(model, tok, spec, max_batch=16):
    return Decoder(lambda: (model, tok), spec, 0.3, 5, 1024, max_batch)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["fixed", "shuffled"])
def test_precomputed_answers_equal_the_answers_jobs_own_decoding(loaded, order):
    model, tok, rt, items = loaded
    spec = PromptSpec(option_order=order)
    for group_seed in SEEDS if order == "shuffled" else [0]:
        seeds = SEEDS if order == "fixed" else [group_seed]
        scores = score_items(model, tok, items, spec, group_seed, 0.3)
        # a small decode batch: each prompt's cache rows are repeated and split over chunks
        pre = precompute_answers(items, scores, seeds, _decoder(model, tok, spec, max_batch=4), rt.as_dict())
        assert precomputed_seeds(pre) == seeds and pre["item_id"].to_list() == scores["item_id"].to_list()
        for seed in seeds:
            fast = answer_seed(items, pre, seed, None, "strict")
            own = answer_seed(items, scores, seed, _decoder(model, tok, spec), "strict", rt.as_dict())
            assert fast.equals(own)  # every column, texts and probabilities included
            if order == "fixed":
                assert set(own["method"]) == {"first_token", "continued"}  # both paths exercised


@pytest.mark.slow
@pytest.mark.parametrize(("order", "batch_tokens", "max_batch"), [("fixed", 1024, 16), ("shuffled", 300, 3)])
def test_answers_continued_from_the_scoring_cache_equal_the_two_pass_ones(loaded, order, batch_tokens, max_batch):
    """The scores job's one prompt pass (continuing from each batch's own KV cache) gives the
    table of scoring then continuing with a second prompt pass, whatever the batch geometry."""
    model, tok, rt, items = loaded
    spec = PromptSpec(option_order=order)
    seeds = SEEDS if order == "fixed" else [SEEDS[0]]
    dec = _decoder(model, tok, spec, max_batch=max_batch)
    one = score_and_answer(model, tok, items, spec, seeds[0], seeds, dec, rt.as_dict(), batch_tokens, max_batch)
    scores = score_items(model, tok, items, spec, seeds[0], 0.3)
    two = precompute_answers(items, scores, seeds, _decoder(model, tok, spec), rt.as_dict())
    if batch_tokens == 1024:  # the same prompt batches: the same table, probabilities included
        assert one.equals(two)
    # other batches change the probabilities' last bits, never an answer
    answers = ["item_id", "answer_seeds", "answer_letters", "answer_texts", "top_ids"]
    assert one.select(answers).equals(two.select(answers))
    # runtime.continuation second_pass: one row per pair throughout (no rows shared)
    plain = Decoder(lambda: (model, tok), spec, 0.3, 5, 1024, max_batch, share_rows=False)
    assert precompute_answers(items, scores, seeds, plain, rt.as_dict()).select(answers).equals(one.select(answers))
    # a GPU's batch_cache options: one row per pair, the cache gathered once per chunk
    gpu = Decoder(
        lambda: (model, tok), spec, 0.3, 5, 1024, max_batch, **decoder_options("cuda", max_batch, "batch_cache")
    )
    assert score_and_answer(
        model, tok, items, spec, seeds[0], seeds, gpu, rt.as_dict(), batch_tokens, max_batch
    ).equals(one)
    texts = [t for ts in one["answer_texts"] for t in ts if t is not None]
    assert len(texts) >= 5, "too few answers continued to test the continuation"


def test_group_seeds():
    assert group_seeds("fixed", [1, 2, 3]) == [1, 2, 3]
    assert group_seeds("seed=2", [1, 2, 3]) == [2]
    assert group_seeds("seed=9", [1, 2, 3]) == []


@pytest.mark.slow
def test_an_answers_job_for_a_precomputed_seed_imports_no_mlx(loaded, tmp_path):
    model, tok, rt, items = loaded
    spec = PromptSpec()
    scores = score_items(model, tok, items, spec, 0, 0.3)
    pre = precompute_answers(items, scores, [42], _decoder(model, tok, spec), rt.as_dict())
    write_parquet(items, tmp_path / "items.parquet")
    write_parquet(pre, tmp_path / "scores.parquet")
    expected = answer_seed(items, scores, 42, _decoder(model, tok, spec), "strict", rt.as_dict())
    write_parquet(expected, tmp_path / "expected.parquet")
    code = f"""
import sys
import polars as pl
from compbias.inference.jobs import answers_job
items = pl.read_parquet({str(tmp_path / "items.parquet")!r})
scores = pl.read_parquet({str(tmp_path / "scores.parquet")!r})
out = answers_job(items, scores, "/nonexistent/checkpoint", 0, 42, {{}}, {{}}, {{}})
assert out.equals(pl.read_parquet({str(tmp_path / "expected.parquet")!r})), "answers differ"
assert not [m for m in sys.modules if m == "mlx" or m.startswith("mlx.")], "MLX was imported"
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr


def test_continuation_cache_gathers_left_padded_rows_with_room(loaded):
    """A continuation's cache holds its rows' prompt positions left-padded to its longest row,
    with room for the answer's tokens, so no decode step grows (copies) it; gathered from the
    batch's cache, which stays as it is for the next continuation."""
    import mlx.core as mx
    import numpy as np

    from compbias.inference.scoring import continuation_cache, prompt_batches

    model, tok, _, _ = loaded
    lists = [[1, 5, 9, 4, 7, 8], [1, 5, 9, 2], [1, 5, 9, 3, 3]]
    batch = next(prompt_batches(model, lists, keep_cache=True))
    right = [(np.array(c.keys), np.array(c.values)) for c in batch.cache]
    for rows in ([2, 1], [0, 1, 1], [2]):  # repeats, subsets
        cache = continuation_cache(batch, rows, room=4)
        lengths = [batch.lengths[r] for r in rows]
        width = max(lengths)
        for (keys, values), c in zip(right, cache):
            assert c.keys.shape[2] == width + 4 and c._idx == width
            assert c.offset.tolist() == lengths and c.left_padding.tolist() == [width - n for n in lengths]
            for j, (r, n) in enumerate(zip(rows, lengths)):
                np.testing.assert_array_equal(np.array(c.keys[j, :, width - n : width]), keys[r, :, :n])
                np.testing.assert_array_equal(np.array(c.values[j, :, width - n : width]), values[r, :, :n])
        model(mx.array([[3]] * len(rows)), cache=cache)
        assert cache[0].keys.shape[2] == width + 4  # written in place, not grown


@pytest.mark.parametrize("share_rows", [True, False])
def test_decode_chunks_hold_only_the_answers_that_go_on(loaded, share_rows):
    """Answers that end at their first token (here: the end of text) leave no gap in the decode
    chunks, and the chunk size changes no answer."""
    model, tok, _, items = loaded
    spec = PromptSpec()
    sizes: list[int] = []

    class Counting(Decoder):
        def _steps(self, model, cache_for, node, item_ids, seeds, firsts):
            sizes.append(len(item_ids))
            return super()._steps(model, cache_for, node, item_ids, seeds, firsts)

    rows = items.head(4).to_dicts() * 2
    seeds = [42] * 4 + [123] * 4
    word = tok.encode(" The", add_special_tokens=False)[0]
    firsts = [tok.eos_token_id, word] * 4  # every other answer ends at once
    small = Counting(lambda: (model, tok), spec, 0.3, 5, 1024, 4, chunk_pairs=2, share_rows=share_rows)
    got = small.decode_pairs(rows, seeds, firsts)
    assert sizes == [2, 2]  # the four answers that go on, two per chunk; none for the others
    assert [got[j] for j in range(0, 8, 2)] == [("", None)] * 4
    large = Decoder(lambda: (model, tok), spec, 0.3, 5, 1024, 4, chunk_pairs=64, share_rows=share_rows)
    assert large.decode_pairs(rows, seeds, firsts) == got
