"""Expected emergence over virtual seed sets: the vectorised tables equal a brute-force count."""

import numpy as np
import polars as pl
import pytest
from conftest import role_of

from compbias.inference.sampling import LETTERS, Heads
from compbias.stats.emergence import EXPECTED_COLUMNS, expected_emergence
from compbias.stats.virtual_seeds import (
    VIRTUAL_SCHEMA,
    VIRTUAL_SEED_OFFSET,
    check_seeds,
    unpack_sets,
    virtual_outcomes,
    virtual_seed,
)

N_ITEMS, N_SETS, SEEDS = 24, 40, [42, 123, 456]
TOKENS = {11: "A", 12: "B", 13: "C", 14: None, 15: None}  # 14, 15: "The", " I" (not a bare letter)


def _items() -> pl.DataFrame:
    rng = np.random.default_rng(1)
    unknown = rng.integers(0, 3, N_ITEMS)
    biased = (unknown + 1 + rng.integers(0, 2, N_ITEMS)) % 3
    biased = [None if i == 5 else int(b) for i, b in enumerate(biased)]  # one unresolved target
    return pl.DataFrame(
        {
            "item_id": [f"it-{i}" for i in range(N_ITEMS)],
            "category": [("age", "ses")[i % 2] for i in range(N_ITEMS)],
            "unknown_idx": unknown,
            "biased_idx": biased,
            "anti_idx": [None if b is None else 3 - int(u) - b for u, b in zip(unknown, biased)],
        },
        schema_overrides={"biased_idx": pl.Int64, "anti_idx": pl.Int64},
    )


def _scores(seed: int, shift: float) -> pl.DataFrame:
    """Heads over tokens 11..15; ``shift`` tilts mass toward "B" (a compressed variant)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N_ITEMS):
        logits = rng.normal(0, 1.2, 5) + np.array([0, shift, 0, 0, 0])
        # heads of 2, 3, 4 or 5 tokens (several Heads buckets), complete: the rest has ~1e-12 of the mass;
        # every third item's head of 4 misses real mass (draws beyond it need the full distribution)
        k = (2, 3, 4, 5)[i % 4] if i % 3 else 4
        if i % 3:
            logits[np.argsort(-logits, kind="stable")[k:]] = -40.0
        p = np.exp(logits) / np.exp(logits).sum()
        order = np.argsort(-p, kind="stable")
        ids = [11 + int(j) for j in order[:k]]
        perm = list(np.random.default_rng(100 + i).permutation(3)) if i % 4 == 0 else [0, 1, 2]
        rows.append(
            {
                "item_id": f"it-{i}",
                "top_ids": ids,
                "top_probs": [float(p[j]) for j in order[:k]],
                "top_letters": [TOKENS[t] for t in ids],
                "perm": perm,
                "n_vocab": 16,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"top_letters": pl.List(pl.String), "perm": pl.List(pl.Int64)})


def _brute_outcomes(scores: pl.DataFrame, items: pl.DataFrame, rng: str, seed: int) -> dict[str, str]:
    """item_id -> outcome of one draw, one item at a time (Heads of a single row)."""
    info = {r["item_id"]: r for r in items.iter_rows(named=True)}
    out = {}
    for r in scores.iter_rows(named=True):
        pos = int(Heads([r["item_id"]], [r["top_ids"]], [r["top_probs"]]).draw(rng, seed, 16)[0])
        letter = r["top_letters"][pos] if pos >= 0 else None
        if letter is None:
            out[r["item_id"]] = "continue"
        else:
            it = info[r["item_id"]]
            out[r["item_id"]] = role_of(r["perm"][LETTERS.index(letter)], it["unknown_idx"], it["biased_idx"])
    return out


def _brute_rates(base: pl.DataFrame, var: pl.DataFrame, items: pl.DataFrame, rng: str, cat: str) -> np.ndarray:
    keep = [
        r["item_id"]
        for r in items.iter_rows(named=True)
        if r["biased_idx"] is not None and cat in ("all", r["category"])
    ]
    rates = []
    for j in range(N_SETS):
        seeds = [VIRTUAL_SEED_OFFSET + j * len(SEEDS) + i for i in range(len(SEEDS))]
        ob = [_brute_outcomes(base, items, rng, s) for s in seeds]
        ov = [_brute_outcomes(var, items, rng, s) for s in seeds]
        unb = [i for i in keep if all(o[i] != "biased" for o in ob)]
        became = [i for i in unb if any(o[i] == "biased" for o in ov)]
        rates.append(len(became) / len(unb) if unb else np.nan)
    return np.array(rates)


@pytest.fixture(scope="module")
def study():
    items = _items()
    return items, {"bf16": _scores(7, 0.0), "q4": _scores(7, 0.9), "q4-noise": _scores(7, 0.3)}


@pytest.mark.parametrize("rng", ["gumbel", "icdf"])
def test_expected_emergence_equals_brute_force(study, rng):
    items, scores = study
    virtual = pl.concat(
        [
            virtual_outcomes({"fixed": s}, items, rng, N_SETS, SEEDS, threads=2 if v == "q4" else 1).with_columns(
                model=pl.lit("m"), variant=pl.lit(v)
            )
            for v, s in scores.items()
        ]
    )
    ee = expected_emergence(virtual, items, "bf16", controls={"q4-noise": "q4"})
    assert ee.columns == list(EXPECTED_COLUMNS)
    assert ee.filter(pl.col("variant") == "q4")["category"].to_list() == ["age", "all", "ses"]
    for cat in ("age", "ses", "all"):
        want = _brute_rates(scores["bf16"], scores["q4"], items, rng, cat)
        got = ee.filter((pl.col("variant") == "q4") & (pl.col("category") == cat)).row(0, named=True)
        fin = want[np.isfinite(want)]
        assert got["expected_mean"] == pytest.approx(fin.mean(), abs=1e-12)
        assert got["expected_lo"] == pytest.approx(np.quantile(fin, 0.025), abs=1e-12)
        assert got["expected_hi"] == pytest.approx(np.quantile(fin, 0.975), abs=1e-12)
        assert (got["n_sets"], got["n_seeds"], got["rng"]) == (N_SETS, 3, rng)
        ctl = ee.filter((pl.col("variant") == "q4-noise") & (pl.col("category") == cat)).row(0, named=True)
        assert (got["control"], ctl["control_for"], ctl["control"]) == ("q4-noise", "q4", None)
        assert got["control_expected_mean"] == ctl["expected_mean"]
    # the study seeds' number by the same first-token rule
    ob = [_brute_outcomes(scores["bf16"], items, rng, s) for s in SEEDS]
    ov = [_brute_outcomes(scores["q4"], items, rng, s) for s in SEEDS]
    keep = [r["item_id"] for r in items.iter_rows(named=True) if r["biased_idx"] is not None]
    unb = [i for i in keep if all(o[i] != "biased" for o in ob)]
    al = ee.filter((pl.col("variant") == "q4") & (pl.col("category") == "all")).row(0, named=True)
    assert al["study_first_token"] == pytest.approx(sum(any(o[i] == "biased" for o in ov) for i in unb) / len(unb))
    assert 0 <= al["study_quantile"] <= 1
    # share of "continue" draws: tokens 14/15 and (icdf) draws beyond a short head
    n_cont = sum(
        o == "continue"
        for s in range(N_SETS * 3)
        for o in _brute_outcomes(scores["q4"], items, rng, VIRTUAL_SEED_OFFSET + s).values()
        if True
    )
    row = virtual.filter(pl.col("variant") == "q4")
    assert int(row["n_continue"].sum()) == n_cont
    assert 0 < al["share_continue_variant"] < 1 and 0 <= al["share_undetermined"] <= 1


def test_virtual_outcomes_schema_bits_and_threads(study):
    items, scores = study
    one = virtual_outcomes({"fixed": scores["q4"]}, items, "gumbel", 11, SEEDS)
    two = virtual_outcomes({"fixed": scores["q4"]}, items, "gumbel", 11, SEEDS, threads=2)
    assert one.schema == pl.Schema(VIRTUAL_SCHEMA) and one.equals(two)
    bits = unpack_sets(one["any_biased"], 11)
    assert bits.shape == (N_ITEMS, 11)
    # set 3, by hand
    o = [_brute_outcomes(scores["q4"], items, "gumbel", virtual_seed(3, i, 3)) for i in range(3)]
    assert bits[:, 3].tolist() == [any(x[i] == "biased" for x in o) for i in one["item_id"]]


def test_virtual_outcomes_do_not_depend_on_how_seeds_are_grouped(study, monkeypatch):
    """Sets drawn a few per call, and small blocks drawing several seeds at once, give the
    outcomes of one draw per seed (the brute force above checks those)."""
    import compbias.stats.virtual_seeds as vs

    items, scores = study
    default = virtual_outcomes({"fixed": scores["q4"]}, items, "gumbel", N_SETS, SEEDS, threads=2)
    monkeypatch.setattr(vs, "SETS_PER_CALL", 3)
    assert virtual_outcomes({"fixed": scores["q4"]}, items, "gumbel", N_SETS, SEEDS, threads=2).equals(default)
    monkeypatch.setattr(vs, "BLOCK_ENTRIES", 1)  # one seed per call, blocks of 16 rows
    assert virtual_outcomes({"fixed": scores["q4"]}, items, "gumbel", N_SETS, SEEDS).equals(default)


def test_shuffled_groups_and_seed_checks(study):
    items, scores = study
    groups = {f"seed={s}": scores["q4"] for s in SEEDS}
    assert virtual_outcomes(groups, items, "icdf", 5, SEEDS).equals(
        virtual_outcomes({"fixed": scores["q4"]}, items, "icdf", 5, SEEDS)
    )
    with pytest.raises(ValueError, match="collide"):
        check_seeds([1, VIRTUAL_SEED_OFFSET])


def test_expected_emergence_of_no_virtual_tables(study):
    items, _ = study
    ee = expected_emergence(
        pl.DataFrame(schema=VIRTUAL_SCHEMA | {"model": pl.String, "variant": pl.String}), items, "bf16"
    )
    assert ee.is_empty() and ee.columns == list(EXPECTED_COLUMNS)
