"""Bias-target derivation for BBQ items: which answer option names the stereotyped group.

BBQ has no target field; upstream derives it (``analysis_scripts/BBQ_results_metadata.R``) by
matching each non-"unknown" option against the item's stereotyped groups. The rules differ by
category, and :func:`resolve_target` applies the one of the item's category:

* ``tag`` (every non-intersectional category but Nationality): the option's ``answer_info`` tag,
  normalised (:func:`norm`: case, punctuation and the ``M-``/``F-`` gender prefix of race tags
  dropped; ``man``/``woman`` read as ``M``/``F``, transgender spellings as ``trans``), equals a
  normalised stereotyped group.
* ``text`` (Nationality): as ``tag``, or the option's ``answer_info`` *text* equals a group.
  Nationality tags are regions ("Europe") while the groups are nationalities ("British"); upstream
  matches the text for this category.
* ``race_x_gender``: tags ``M-Race``/``F-Race``; a group ``F-Race`` names both parts, a plain
  group a race (or, ``M``/``F``/``man``/``woman``..., a gender) and plain groups combine. A tag
  without a gender prefix takes its gender from the option text ("... man", "... woman").
* ``race_x_ses``: tags ``lowSES-[M-|F-]Race``/``highSES-...``; a group ``lowSES-Race`` names both
  parts, a plain race group is read as the low-SES members of that race (the stereotyped SES of
  the intersectional templates), ``low SES``/``high SES`` name the SES.

The target is resolved only when exactly one non-unknown option matches; zero or two matches
leave it unresolved, with a reason that says which (:class:`Resolution`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Tag spellings that name the same group as a stereotyped_groups entry (after norm).
_ALIASES = {
    "woman": "f",
    "girl": "f",
    "man": "m",
    "boy": "m",
    "transf": "trans",
    "transm": "trans",
    "transgenderwomen": "trans",
    "transgendermen": "trans",
    "nontransf": "nontrans",
    "nontransm": "nontrans",
}
# Gender words of the intersectional groups and option texts.
_GENDERS = {
    "m": "m",
    "man": "m",
    "men": "m",
    "boy": "m",
    "male": "m",
    "f": "f",
    "woman": "f",
    "women": "f",
    "girl": "f",
    "female": "f",
}
_SES = {"lowses": "lowses", "highses": "highses"}

#: Study category -> name of the rule that derives its target.
RULES: dict[str, str] = {
    "nationality": "text",
    "race_x_gender": "race_x_gender",
    "race_x_ses": "race_x_ses",
}
DEFAULT_RULE = "tag"


@dataclass(frozen=True)
class Resolution:
    """The derived target of one item: ``target`` (option index or None), ``unknown`` (index of
    the "unknown" option), ``rule`` (see :data:`RULES`) and, when unresolved, ``reason``."""

    target: int | None
    unknown: int
    rule: str
    reason: str | None = None


@functools.lru_cache(maxsize=65536)
def norm(tag: str) -> str:
    """A tag or group compared case- and punctuation-insensitively, without a race tag's
    gender prefix (``F-Black`` -> ``black``), with the aliases of gender tags applied."""
    tag = re.sub(r"^[MF]-", "", tag.strip())  # race tags carry a gender prefix: "F-Black"
    key = re.sub(r"[^a-z]", "", tag.lower())
    return _ALIASES.get(key, key)


def _key(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.lower())


def unknown_index(answer_info: Mapping[str, list[str]]) -> int:
    """Index of the option whose ``answer_info`` tag is ``unknown``; ValueError unless exactly one."""
    tags = [answer_info[f"ans{i}"][1] for i in range(3)]
    unknown = [i for i, t in enumerate(tags) if t == "unknown"]
    if len(unknown) != 1:
        raise ValueError(f"expected exactly one 'unknown' option tag, got tags {tags}")
    return unknown[0]


def _tag_match(tag: str, wanted: set[str]) -> bool:
    return bool(tag) and norm(tag) in wanted


def _plain_hits(answer_info: Mapping[str, list[str]], options: list[int], groups: list[str], text: bool) -> list[int]:
    wanted = {norm(g) for g in groups}
    hits = []
    for i in options:
        option_text, tag = answer_info[f"ans{i}"][0], answer_info[f"ans{i}"][1]
        if _tag_match(tag, wanted) or (text and bool(option_text) and norm(option_text) in wanted):
            hits.append(i)
    return hits


def _gender_from_text(text: str) -> str | None:
    words = re.findall(r"[a-z]+", text.lower())
    found = {_GENDERS[w] for w in words if w in ("man", "woman", "boy", "girl", "male", "female")}
    return found.pop() if len(found) == 1 else None


def _race_gender(text: str, tag: str) -> tuple[str | None, str] | None:
    """(gender or None, race) of a Race_x_gender option."""
    m = re.match(r"^([MF])-(.+)$", tag.strip())
    if m:
        return m.group(1).lower(), _key(m.group(2))
    if not _key(tag):
        return None
    return _gender_from_text(text), _key(tag)


def _race_ses(tag: str) -> tuple[str, str] | None:
    """(ses, race) of a Race_x_SES option tag ``lowSES-[M-|F-]Race``."""
    m = re.match(r"^(low|high)\s*SES-(?:[MF]-)?(.+)$", tag.strip(), flags=re.IGNORECASE)
    if not m or not _key(m.group(2)):
        return None
    return f"{m.group(1).lower()}ses", _key(m.group(2))


def _split_groups(groups: Iterable[str], second: Mapping[str, str], pair: str) -> tuple[set, set, set]:
    """(pairs, first-part-only, race-only) of intersectional groups; ``second`` maps the
    non-race part's words, ``pair`` is the regex of a two-part group."""
    pairs, firsts, races = set(), set(), set()
    for g in groups:
        m = re.match(pair, g.strip(), flags=re.IGNORECASE)
        if m:
            pairs.add((second.get(_key(m.group(1)), _key(m.group(1))), _key(m.group(2))))
        elif _key(g) in second:
            firsts.add(second[_key(g)])
        elif _key(g):
            races.add(_key(g))
    return pairs, firsts, races


def _intersectional_hits(
    answer_info: Mapping[str, list[str]], options: list[int], groups: list[str], rule: str
) -> tuple[list[int], list[str]]:
    """(matching options, tags that could not be read) under ``race_x_gender``/``race_x_ses``."""
    if rule == "race_x_gender":
        pairs, firsts, races = _split_groups(groups, _GENDERS, r"^([MF])-(.+)$")
    else:
        ses_words = {**_SES, "low": "lowses", "high": "highses"}
        pairs, firsts, races = _split_groups(groups, ses_words, r"^(low\s*SES|high\s*SES)-(?:[MF]-)?(.+)$")
        if races and not firsts:
            firsts = {"lowses"}  # a plain race group: the low-SES members of that race
    hits, unread = [], []
    for i in options:
        option_text, tag = answer_info[f"ans{i}"][0], answer_info[f"ans{i}"][1]
        parts = _race_gender(option_text, tag) if rule == "race_x_gender" else _race_ses(tag)
        if parts is None:
            unread.append(tag)
            continue
        first, race = parts
        plain = bool(firsts or races) and (not firsts or first in firsts) and (not races or race in races)
        if (first, race) in pairs or plain:
            hits.append(i)
    return hits, unread


def resolve_target(category: str, answer_info: Mapping[str, list[str]], groups: Iterable[str]) -> Resolution:
    """The target of an item of study category ``category`` under its rule (module docstring)."""
    groups = [str(g) for g in groups]
    unknown = unknown_index(answer_info)
    options = [i for i in range(3) if i != unknown]
    rule = RULES.get(category, DEFAULT_RULE)
    unread: list[str] = []
    if rule in ("tag", "text"):
        hits = _plain_hits(answer_info, options, groups, text=rule == "text")
    else:
        hits, unread = _intersectional_hits(answer_info, options, groups, rule)
    if len(hits) == 1:
        return Resolution(hits[0], unknown, rule)
    return Resolution(None, unknown, rule, _reason(answer_info, options, groups, rule, len(hits), unread))


def _reason(
    answer_info: Mapping[str, list[str]],
    options: list[int],
    groups: list[str],
    rule: str,
    n_hits: int,
    unread: list[str],
) -> str:
    what = "answer text or tag" if rule == "text" else "tag"
    seen = ", ".join(f"ans{i} {answer_info[f'ans{i}'][0]!r}/{answer_info[f'ans{i}'][1]!r}" for i in options)
    if not groups:
        return f"no stereotyped_groups in additional_metadata ({seen})"
    if n_hits == 2:
        return f"both options' {what} match stereotyped_groups {groups} ({seen})"
    empty = [f"ans{i}" for i in options if not answer_info[f"ans{i}"][1]]
    if empty:
        empty_text = ", ".join(empty)
        return f"empty answer_info tag on {empty_text}; no option's {what} matches stereotyped_groups {groups} ({seen})"
    if unread:
        form = "M-Race/F-Race" if rule == "race_x_gender" else "lowSES-[M-|F-]Race/highSES-..."
        return f"tag(s) {unread} not of the form {form}; no option matches stereotyped_groups {groups} ({seen})"
    return f"no option's {what} matches stereotyped_groups {groups} ({seen})"
