"""BBQ items: reading upstream JSONL or Hugging Face copies, sharding; bias targets are derived
by :mod:`compbias.data.targets`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from compbias.data.targets import Resolution, norm, resolve_target
from compbias.settings import Dataset, coerce_section

#: Study category name -> upstream file stem / category value.
CATEGORIES: dict[str, str] = {
    "age": "Age",
    "disability_status": "Disability_status",
    "gender_identity": "Gender_identity",
    "nationality": "Nationality",
    "physical_appearance": "Physical_appearance",
    "race_ethnicity": "Race_ethnicity",
    "religion": "Religion",
    "ses": "SES",
    "sexual_orientation": "Sexual_orientation",
    "race_x_ses": "Race_x_SES",
    "race_x_gender": "Race_x_gender",
}
#: The ``dataset.categories`` value that means every category (:func:`resolve_categories`).
ALL_CATEGORIES = "all"

REQUIRED = (
    "example_id",
    "question_polarity",
    "context_condition",
    "category",
    "answer_info",
    "additional_metadata",
    "context",
    "question",
    "ans0",
    "ans1",
    "ans2",
    "label",
)

ITEM_SCHEMA = {
    "item_id": pl.String,
    "category": pl.String,
    "example_id": pl.Int64,
    "question_index": pl.String,
    "condition": pl.String,
    "polarity": pl.String,
    "subcategory": pl.String,
    "stereotyped_groups": pl.List(pl.String),
    "context": pl.String,
    "question": pl.String,
    "ans0": pl.String,
    "ans1": pl.String,
    "ans2": pl.String,
    "label": pl.Int64,
    "unknown_idx": pl.Int64,
    "target_idx": pl.Int64,
    "biased_idx": pl.Int64,
    "anti_idx": pl.Int64,
    "source_target_idx": pl.Int64,
    "target_rule": pl.String,
    "unresolved_reason": pl.String,
    "shard": pl.Int64,
}


class BBQRecordError(ValueError):
    """A BBQ record that cannot be parsed; the message names file and line."""


def stable_shard(item_id: str, n_shards: int) -> int:
    """Shard of an item: a hash of its id that is the same on every machine and run."""
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


_norm = norm  # the tag normalisation of the target rules (compbias.data.targets.norm)


def derive_target(
    answer_info: Mapping[str, list[str]], groups: Iterable[str], category: str = "ses"
) -> tuple[int | None, int]:
    """(index of the option naming a stereotyped group or None, index of "unknown") under the
    target rule of ``category`` (:func:`compbias.data.targets.resolve_target`; the default
    category's rule matches the normalised tags)."""
    r = resolve_target(category, answer_info, groups)
    return r.target, r.unknown


def roles(polarity: str, target: int | None, unknown: int) -> tuple[int | None, int | None]:
    """(biased_idx, anti_idx): the bias-consistent answer is the target for a negative question
    and the other group for a non-negative one (Parrish et al. 2022)."""
    if target is None:
        return None, None
    other = ({0, 1, 2} - {target, unknown}).pop()
    return (target, other) if polarity == "neg" else (other, target)


def parse_record(rec: Mapping[str, Any], where: str, n_shards: int = 1) -> dict[str, Any]:
    """Turn one upstream-format BBQ record into an items-table row; ``where`` names its origin."""
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise BBQRecordError(f"{where}: missing field(s) {', '.join(missing)}")
    try:
        category = _study_category(str(rec["category"]))
        polarity, condition = rec["question_polarity"], rec["context_condition"]
        if polarity not in ("neg", "nonneg") or condition not in ("ambig", "disambig"):
            raise ValueError(f"bad polarity/condition {polarity!r}/{condition!r}")
        meta = rec["additional_metadata"] or {}
        groups = [str(g) for g in meta.get("stereotyped_groups") or []]
        res: Resolution = resolve_target(category, rec["answer_info"], groups)
        target, unknown = res.target, res.unknown
        biased, anti = roles(polarity, target, unknown)
        label = int(rec["label"])
        if label not in (0, 1, 2):
            raise ValueError(f"label {label} not in 0..2")
        item_id = f"{category}-{int(rec['example_id'])}"
        source_target = rec.get("target_label")
    except BBQRecordError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise BBQRecordError(f"{where}: {exc}") from exc
    return {
        "item_id": item_id,
        "category": category,
        "example_id": int(rec["example_id"]),
        "question_index": str(rec.get("question_index", "")),
        "condition": condition,
        "polarity": polarity,
        "subcategory": str(meta.get("subcategory", "")),
        "stereotyped_groups": groups,
        "context": rec["context"],
        "question": rec["question"],
        "ans0": rec["ans0"],
        "ans1": rec["ans1"],
        "ans2": rec["ans2"],
        "label": label,
        "unknown_idx": unknown,
        "target_idx": target,
        "biased_idx": biased,
        "anti_idx": anti,
        "source_target_idx": None if source_target in (None, -1) else int(source_target),
        "target_rule": res.rule,
        "unresolved_reason": res.reason,
        "shard": stable_shard(item_id, n_shards),
    }


def _study_category(name: str) -> str:
    key = name.lower()
    if key not in CATEGORIES:
        raise ValueError(f"unknown category {name!r}; known: {', '.join(CATEGORIES)}")
    return key


def json_problem(exc: json.JSONDecodeError) -> str:
    """The whole message of a JSON error in one line of JSONL: ``Expecting ',' delimiter at
    column 61`` (the decoder's own message ends in "at" for some errors, e.g. control characters)."""
    return f"{exc.msg}{'' if exc.msg.endswith(' at') else ' at'} column {exc.colno}"


def iter_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (``file:line``, record) for each non-empty line; bad JSON names file and line."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                yield where, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise BBQRecordError(f"{where}: invalid JSON ({json_problem(exc)})") from exc


def iter_hf(
    name: str, categories: list[str], split: str, columns: Mapping[str, str], revision: str | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield upstream-format records from a Hugging Face BBQ copy (one config per category).

    ``columns`` maps upstream field names to the dataset's column names where they differ.
    """
    from datasets import load_dataset

    for cat in categories:
        ds = load_dataset(name, CATEGORIES[cat], split=split, revision=revision)
        for n, row in enumerate(ds):
            rec = {k: row[v] for k, v in columns.items() if v in row}
            rec = {**row, **rec}
            rec.setdefault("category", CATEGORIES[cat])
            yield f"{name}[{CATEGORIES[cat]}]:{split}:{n}", rec


def load_items(
    records: Iterable[tuple[str, Mapping[str, Any]]],
    categories: list[str],
    conditions: list[str],
    n_shards: int,
    limit_per_category: int | None = None,
) -> pl.DataFrame:
    """Build the items table from (origin, record) pairs, filtered to categories and conditions.

    ``limit_per_category`` keeps the first N items of each category in file order (before the
    condition filter is applied per item, after it for counting), so a limit is deterministic.
    """
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for where, rec in records:
        row = parse_record(rec, where, n_shards)
        if row["category"] not in categories or row["condition"] not in conditions:
            continue
        if limit_per_category is not None and counts.get(row["category"], 0) >= limit_per_category:
            continue
        counts[row["category"]] = counts.get(row["category"], 0) + 1
        rows.append(row)
    items = pl.DataFrame(rows, schema=ITEM_SCHEMA)
    dup = items.filter(pl.col("item_id").is_duplicated())["item_id"].unique().to_list()
    if dup:
        raise BBQRecordError(f"duplicate item ids: {dup[:5]}")
    empty = [c for c in categories if c not in counts]
    if empty:
        raise BBQRecordError(f"no items for categories {empty} with conditions {conditions}")
    return items


def jsonl_records(directory: str | Path, categories: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Records of the upstream JSONL files ``{Category}.jsonl`` for ``categories``."""
    directory = Path(directory)
    for cat in categories:
        path = directory / f"{CATEGORIES[_study_category(cat)]}.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"dataset.path: {path} not found (category {cat!r})")
        yield from iter_jsonl(path)


def target_report(items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(items with unresolved targets and the reason, items whose source target label disagrees
    with ours)."""
    unresolved = items.filter(pl.col("target_idx").is_null()).select(
        "item_id",
        "category",
        "condition",
        "polarity",
        "ans0",
        "ans1",
        "ans2",
        "stereotyped_groups",
        "target_rule",
        pl.col("unresolved_reason").alias("reason"),
    )
    disagree = items.filter(
        pl.col("source_target_idx").is_not_null()
        & (pl.col("source_target_idx") != pl.col("target_idx")).fill_null(True)
    ).select("item_id", "category", "target_idx", "source_target_idx")
    return unresolved, disagree


def target_counts(items: pl.DataFrame) -> pl.DataFrame:
    """Per category and condition (and category ``all``): items, resolved and unresolved targets,
    the rule used, and, for a source with its own target label (``source_target_idx``), how many
    items carry one and how often it agrees with the derived target (``agree_rate``, NaN when
    none carries one).

    Columns: category, condition, target_rule, n_items, n_resolved, n_unresolved, n_source_label,
    n_agree, agree_rate.
    """
    has = pl.col("source_target_idx").is_not_null()
    agg = [
        pl.col("target_rule").unique().sort().str.join("+").alias("target_rule"),
        pl.len().alias("n_items"),
        pl.col("target_idx").is_not_null().sum().alias("n_resolved"),
        pl.col("target_idx").is_null().sum().alias("n_unresolved"),
        has.sum().alias("n_source_label"),
        (has & (pl.col("source_target_idx") == pl.col("target_idx")).fill_null(False)).sum().alias("n_agree"),
    ]
    per = items.group_by("category", "condition").agg(agg)
    pooled = items.group_by("condition").agg(agg).with_columns(category=pl.lit("all"))
    out = pl.concat([per, pooled.select(per.columns)]).with_columns(pl.col("^n_.*$").cast(pl.Int64))
    return out.with_columns(
        agree_rate=pl.when(pl.col("n_source_label") > 0)
        .then(pl.col("n_agree") / pl.col("n_source_label"))
        .otherwise(float("nan"))
    ).sort(pl.col("category") == "all", "category", "condition")


def resolve_categories(dataset: Dataset | Mapping[str, Any]) -> list[str]:
    """The study categories of ``dataset.categories``: the list itself, or for ``all`` every
    category file present in ``dataset.path`` (source jsonl; a ``.jsonl`` file there that names
    no known category is an error naming it) or every known category (source hf)."""
    ds = coerce_section(Dataset, "dataset", dataset)
    if ds.categories != ALL_CATEGORIES:
        return list(ds.categories)
    if ds.source != "jsonl":
        return list(CATEGORIES)
    directory = Path(ds.path)
    stems = {v: k for k, v in CATEGORIES.items()}
    files = sorted(directory.glob("*.jsonl"))
    unknown = [p.name for p in files if p.stem not in stems]
    if unknown:
        raise BBQRecordError(
            f"dataset.path: {directory}: {', '.join(unknown)} name(s) no known category "
            f"(dataset.categories: all reads every file; known: {', '.join(f'{v}.jsonl' for v in CATEGORIES.values())})"
        )
    present = {stems[p.stem] for p in files}
    if not present:
        raise BBQRecordError(f"dataset.path: {directory}: no BBQ .jsonl file (dataset.categories: all)")
    return [c for c in CATEGORIES if c in present]


def build_items(dataset: Dataset | Mapping[str, Any], n_shards: int) -> pl.DataFrame:
    """Items table for the ``dataset`` config section (source jsonl or hf)."""
    ds = coerce_section(Dataset, "dataset", dataset)
    categories = resolve_categories(ds)
    if ds.source == "jsonl":
        records = jsonl_records(ds.path, categories)
    else:
        records = iter_hf(ds.name, categories, ds.split, ds.columns, ds.revision)
    return load_items(records, categories, list(ds.conditions), n_shards, ds.limit_per_category)
