"""Checks of Hugging Face hub model sources: a repo id's form, the local cache and, on a real run
(not a dry run, which plans offline), the hub itself."""

from __future__ import annotations

import os
import re

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks huggingface_hub not to use the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_cached(repo_id: str) -> bool:
    """True when the local Hugging Face cache holds a snapshot of model ``repo_id``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id huggingface_hub rejects
        return False
    return isinstance(found, str)


def hub_problem(key: str, repo_id: str, check_hub: bool) -> str | None:
    """A problem with hub model ``repo_id`` (config key ``key``), or None."""
    if not HUB_ID.match(repo_id):
        return (
            f"config key '{key}': {repo_id!r} is neither an existing local path nor a Hugging Face repo id (org/name)"
        )
    if not check_hub or hub_cached(repo_id):
        return None
    if hub_offline():
        return (
            f"config key '{key}': Hugging Face repo {repo_id!r} is not in the local cache and "
            "HF_HUB_OFFLINE is set (nor is it an existing local path)"
        )
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(repo_id, timeout=10)
    except GatedRepoError:
        return None  # exists; the download reports the missing token
    except RepositoryNotFoundError:
        return f"config key '{key}': Hugging Face repo {repo_id!r} does not exist (or is private)"
    except Exception as exc:  # connection errors, timeouts
        return (
            f"config key '{key}': Hugging Face repo {repo_id!r} is not in the local cache and "
            f"the hub is unreachable ({type(exc).__name__})"
        )
    return None
