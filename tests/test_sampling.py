import numpy as np
import polars as pl
import pytest
from conftest import role_of, study_items

from compbias.inference import prompts
from compbias.inference.answering import answer_seed, role, score_items
from compbias.inference.decoder import Decoder
from compbias.inference.prompts import PromptSpec
from compbias.inference.runtime import load_model, resolve_runtime
from compbias.inference.sampling import (
    LETTERS,
    Heads,
    invert,
    parse_letter,
    sample_rows,
    sorted_distribution,
    uniform,
)


@pytest.mark.parametrize(
    "text,strict,lenient",
    [
        ("A", "A", "A"),
        (" B) The teenager", "B", "B"),
        ("(C)", "C", "C"),
        ("A.", "A", "A"),
        ("The answer is B", "B", "B"),
        ("answer is: (c)", "C", "C"),
        ("Cannot be determined", None, "C"),
        ("I think B is right", None, "B"),
        ("Absolutely", None, "A"),
        ("", None, None),
        ("xyz", None, None),
    ],
)
def test_parse_letter(text, strict, lenient):
    assert parse_letter(text, "strict") == strict
    assert parse_letter(text, "lenient") == lenient


def test_uniform_is_keyed_by_seed_item_step_only():
    assert uniform(42, "age-1") == uniform(42, "age-1")
    draws = {uniform(s, i, k) for s in (1, 2) for i in ("a", "b") for k in (0, 1)}
    assert len(draws) == 8 and all(0 <= u < 1 for u in draws)


def test_invert_and_sorted_distribution():
    ids, p = sorted_distribution(np.array([0.0, 2.0, 1.0]), temperature=1.0)
    assert ids.tolist() == [1, 2, 0]
    assert np.isclose(p.sum(), 1.0)
    assert invert(0.0, p) == 0 and invert(p[0] + 1e-9, p) == 1
    assert invert(0.999, p[:2]) is None  # beyond the listed head
    assert sorted_distribution(np.array([0.0, 3.0]), 0.0)[0].tolist() == [1]


def test_roles():
    frame = pl.DataFrame(
        {"choice": [None, 2, 0, 1, 1], "unknown": [2] * 5, "biased": [0, 0, 0, 0, None]},
        schema={"choice": pl.Int64, "unknown": pl.Int64, "biased": pl.Int64},
    )
    got = frame.select(r=role(pl.col("choice"), pl.col("unknown"), pl.col("biased")))["r"].to_list()
    assert got == ["invalid", "unknown", "biased", "anti", "unresolved"]


def _answer_row(row: dict, seed: int, letter, text, parser: str) -> dict:
    """One answer by its definition, row by row (the answers table before it was vectorised)."""
    perm = row["perm"]
    letter = letter if text is None else parse_letter(text, parser)
    choice = perm[LETTERS.index(letter)] if letter else None
    p = [0.0, 0.0, 0.0]
    for j, L in enumerate(LETTERS):
        p[perm[j]] = row[f"p_{L}"]
    at = lambda i: None if i is None else p[i]  # noqa: E731
    return {
        **{k: row[k] for k in ("item_id", "category", "condition", "polarity", "shard")},
        "seed": seed,
        "choice": choice,
        "role": role_of(choice, row["unknown_idx"], row["biased_idx"]),
        "method": "first_token" if text is None else "continued",
        "text": text,
        **{f"p_ans{i}": p[i] for i in range(3)},
        "letter_mass": p[0] + p[1] + p[2],  # not sum(): compensated on Python >= 3.12
        "p_biased": at(row["biased_idx"]),
        "p_anti": at(row["anti_idx"]),
        "p_unknown": p[row["unknown_idx"]],
        "compute_dtype": "float32",
        "dequantized": True,
    }


def test_answer_rows_follow_their_definition_row_by_row():
    """The vectorised answers table equals the row-by-row definition: shuffled option orders,
    unresolved targets, invalid and continued answers."""
    from compbias.inference.answering import ANSWER_SCHEMA, _answer_rows

    rng = np.random.default_rng(5)
    n = 300
    perms = [list(prompts.PERMUTATIONS[k]) for k in rng.integers(0, 6, n)]
    unknown = rng.integers(0, 3, n)
    biased = [None if rng.random() < 0.2 else int((u + 1 + rng.integers(0, 2)) % 3) for u in unknown]
    anti = [None if b is None else int(3 - u - b) for u, b in zip(unknown, biased)]
    p = rng.dirichlet(np.ones(4), n)[:, :3]
    joined = pl.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n)],
            "category": "Age",
            "condition": "ambig",
            "polarity": "neg",
            "shard": 0,
            "unknown_idx": unknown,
            "biased_idx": biased,
            "anti_idx": anti,
            "perm": perms,
            "p_A": p[:, 0],
            "p_B": p[:, 1],
            "p_C": p[:, 2],
        },
        schema_overrides={"biased_idx": pl.Int64, "anti_idx": pl.Int64},
    )
    pool = ["A", "B", "C", None]
    letters = [pool[k] for k in rng.integers(0, 4, n)]
    texts = [None if rng.random() < 0.8 else str(rng.choice(["B) x", "answer is C", "none", "(A"])) for _ in range(n)]
    runtime = {"compute_dtype": "float32", "dequantize": True}
    got = _answer_rows(joined, 7, letters, texts, "strict", runtime)
    rows = joined.to_dicts()
    want = pl.DataFrame(
        [_answer_row(r, 7, x, t, "strict") for r, x, t in zip(rows, letters, texts)], schema=ANSWER_SCHEMA
    )
    assert got.equals(want) and set(got["role"]) == {"invalid", "unknown", "unresolved", "biased", "anti"}


def test_shuffled_permutation_is_a_keyed_permutation():
    perms = {prompts.permutation("shuffled", s, "age-1") for s in range(40)}
    assert len(perms) > 3 and all(sorted(p) == [0, 1, 2] for p in perms)
    assert prompts.permutation("fixed", 5, "x") == (0, 1, 2)


@pytest.fixture(scope="module")
def loaded(tiny_model, shared_bbq):
    rt = resolve_runtime()
    model, tok, _ = load_model(tiny_model, rt)
    return model, tok, rt, shared_bbq


def _answers(loaded, n_shards, batch_tokens, order="fixed"):
    model, tok, rt, data = loaded
    items = study_items(data, n_shards)
    spec = PromptSpec(option_order=order)
    dec = Decoder(lambda: (model, tok), spec, 0.3, 5)
    out = []
    for shard in range(n_shards):
        part = items.filter(pl.col("shard") == shard)
        if part.height == 0:
            continue
        for seed in (42, 123):
            scores = score_items(model, tok, part, spec, seed, 0.3, batch_tokens, 64)
            out.append(answer_seed(part, scores, seed, dec, "strict", rt.as_dict()))
    return pl.concat(out).drop("shard").sort("seed", "item_id")


@pytest.mark.slow
@pytest.mark.parametrize("order", ["fixed", "shuffled"])
def test_answers_do_not_depend_on_shards_or_batching(loaded, order):
    one = _answers(loaded, 1, 4096, order)
    four = _answers(loaded, 4, 200, order)  # different shards and batch compositions
    assert one.height == 40
    assert one.select("item_id", "seed", "choice", "role", "method").equals(
        four.select("item_id", "seed", "choice", "role", "method")
    )
    assert np.allclose(one["p_ans0"], four["p_ans0"], atol=1e-5)
    assert set(one["method"]) == {"first_token", "continued"}  # both paths exercised
    assert np.allclose(one["letter_mass"], one["p_ans0"] + one["p_ans1"] + one["p_ans2"])


def test_sample_rows_matches_the_scalar_sampler():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 300)) * 3
    logits[100:] /= 15  # flat rows draw beyond the first head, some beyond the second
    us = rng.random(200)
    us[:5] = 1 - 1e-12  # draws in the far tail take the full-sort path
    got = sample_rows(logits, 0.3, us, heads=(8, 32))
    assert (sample_rows(logits, 0.3, us, heads=(8, 32), block=7) == got).all()
    assert (sample_rows(logits, 0.3, us, heads=(8, 32), block=1000) == got).all()
    for row in range(200):
        ids, p = sorted_distribution(logits[row], 0.3)
        k = invert(us[row], p)
        assert got[row] == ids[-1 if k is None else k]


@pytest.mark.parametrize("rng", ["gumbel", "reference"])
def test_heads_draw_only_complete_heads_and_each_row_alone(rng):
    """Heads short of HEAD_MASS draw -1 (and are skipped); a complete head's draw is the same
    whichever other heads share its Heads."""
    gen = np.random.default_rng(5)
    ids, probs, names = [], [], []
    for i in range(40):
        n = int(gen.integers(1, 12))
        p = gen.dirichlet(np.ones(n) * 0.3)
        if i % 3 == 0:
            p = p * 0.99  # incomplete: 1% of the mass lies beyond the head
        order = np.argsort(-p)
        ids.append([int(t) for t in gen.choice(500, n, replace=False)[order]])
        probs.append([float(x) for x in p[order]])
        names.append(f"item{i}")
    heads = Heads(names, ids, probs)
    for seed in (1, 99):
        got = heads.draw(rng, seed, 500)
        assert (got[::3] == -1).all() and (np.delete(got, np.s_[::3]) >= 0).all()
        alone = [Heads([n], [i], [p]).draw(rng, seed, 500)[0] for n, i, p in zip(names, ids, probs)]
        assert got.tolist() == alone
    seeds = [1, 99, 7, 1_000_000_003]
    assert np.array_equal(heads.draw_seeds(rng, seeds, 500), np.stack([heads.draw(rng, s, 500) for s in seeds]))
