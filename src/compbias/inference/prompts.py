"""Prompts: the reference study's multiple-choice message, option order, chat-template rendering."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

LETTERS = ("A", "B", "C")
PERMUTATIONS = tuple(itertools.permutations(range(3)))

DEFAULT_SYSTEM = (
    "Answer the following multiple choice question by responding with only the letter "
    "(A, B, or C) of your chosen answer."
)
DEFAULT_USER = "Context: {context}\n\nQuestion: {question}\n\nA) {A}\nB) {B}\nC) {C}\n\nAnswer:"


def permutation(order: str, seed: int, item_id: str) -> tuple[int, int, int]:
    """Original option index shown at letter positions A, B, C.

    ``fixed`` keeps the upstream order; ``shuffled`` draws one of the six orders from a hash of
    (seed, item_id), so it is the same on every machine, shard and batch.
    """
    if order == "fixed":
        return (0, 1, 2)
    if order != "shuffled":
        raise ValueError(f"decoding.option_order: unknown value {order!r} (fixed | shuffled)")
    digest = hashlib.sha256(f"perm:{seed}:{item_id}".encode()).digest()
    return PERMUTATIONS[int.from_bytes(digest[:8], "big") % 6]


def messages(
    item: Mapping[str, Any], perm: Sequence[int], system: str = DEFAULT_SYSTEM, user: str = DEFAULT_USER
) -> list[dict[str, str]]:
    """Chat messages for one item with options shown in ``perm`` order."""
    options = {letter: item[f"ans{perm[j]}"] for j, letter in enumerate(LETTERS)}
    text = user.format(context=item["context"], question=item["question"], **options)
    out = [{"role": "user", "content": text}]
    return ([{"role": "system", "content": system}] + out) if system else out


def render(tokenizer: Any, msgs: list[dict[str, str]]) -> list[int]:
    """Token ids of ``msgs`` rendered with the model's own chat template, ready to generate.

    Templates that reject a system role (e.g. Gemma) get the system text prepended to the user
    message instead.
    """
    try:
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    except Exception:
        if msgs[0]["role"] != "system":
            raise
        merged = [{"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}]
        ids = tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, Mapping):  # some transformers versions return a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def render_all(tokenizer: Any, conversations: Sequence[list[dict[str, str]]]) -> list[list[int]]:
    """:func:`render` of every conversation: one batched ``apply_chat_template`` call, whose
    tokenizer encodes all rendered texts at once (on the GPU machine rendering 6,055 prompts one by
    one took 3.9 s), the same ids as one call each; where the batched call fails (a template that
    rejects a system role), one :func:`render` each."""
    if not conversations:
        return []
    try:
        out = tokenizer.apply_chat_template(list(conversations), add_generation_prompt=True, tokenize=True)
    except Exception:
        return [render(tokenizer, msgs) for msgs in conversations]
    if isinstance(out, Mapping):
        out = out["input_ids"]
    return [[int(i) for i in ids] for ids in out]


@dataclass
class PromptSpec:
    """What the model is asked: templates and option order."""

    system: str = DEFAULT_SYSTEM
    user: str = DEFAULT_USER
    option_order: str = "fixed"

    def tokens(self, tokenizer, items: pl.DataFrame, seed: int) -> list[list[int]]:
        """Chat-templated token ids of every item, in table order (:func:`render_all`)."""
        return render_all(
            tokenizer,
            [
                messages(row, permutation(self.option_order, seed, row["item_id"]), self.system, self.user)
                for row in items.iter_rows(named=True)
            ],
        )
