"""Hardware fma for MLX's CPU JIT on x86-64 Linux, with the same results.

``mx.compile`` on a CPU (mlx_lm compiles its ``swiglu``, the MLP activation) writes each fused
kernel as C++ and builds it with ``g++ -std=c++17 -O3`` (``mlx/backend/cpu/jit_compiler.cpp``).
The Linux wheel's build has no ``__AVX2__``, so no ``-mfma`` is added, and the six ``std::fma``
of MLX's ``exp`` polynomial (``simd/math.h``) become calls into libm: 18.6 ns per element on
the 2-core CI machine against 0.27 ns for a multiply. :func:`use_fma_jit` puts a ``g++`` first
on ``PATH`` that adds ``-mfma -ffp-contract=off``: ``std::fma`` becomes the fused instruction
(both round once, so each result is the same), and ``-ffp-contract=off`` keeps the compiler
from fusing any other multiply-add, which would round differently. The wheel's own kernels
(``exp``, softmax) are not JIT-built and stay as they are.

MLX caches built kernels in ``<tmp>/mlx/<version>/cpu`` by name, not by flags: kernels built
before keep their speed (and their identical results) until that directory is removed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

#: Flags added to MLX's JIT compile command.
FLAGS = "-mfma -ffp-contract=off"

_WRAPPER = """#!/bin/sh
# written by compbias.inference.cpu_jit: MLX's CPU JIT with hardware fma, the same results
exec "{gxx}" "$@" {flags}
"""


def cpu_has_fma(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU lists the ``fma`` flag (x86-64 Linux; False where the file is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and " fma " in f" {line.split(':', 1)[-1]} " for line in text.splitlines())


def use_fma_jit(setting: str | None = None, directory: str | Path | None = None) -> str | None:
    """Let MLX's CPU JIT build with :data:`FLAGS`: write a ``g++`` wrapper into ``directory``
    (default ``<tmp>/compbias-jit-<uid>``) and put it first on this process's ``PATH`` (MLX runs
    ``g++`` through the shell when it first builds a kernel, so this must precede that, not the
    import of MLX). Returns the wrapper's path, or None where it does not apply: ``setting``
    (default the ``COMPBIAS_JIT_FMA`` environment variable) ``off``, not x86-64 Linux, no
    ``fma`` CPU flag, no ``g++`` on ``PATH``, or a wrapper that cannot be written or run there
    (the directory not this user's alone, a ``noexec`` mount)."""
    setting = setting or os.environ.get("COMPBIAS_JIT_FMA", "auto")
    if setting == "off" or platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    directory = Path(directory or Path(tempfile.gettempdir()) / f"compbias-jit-{os.getuid()}")
    wrapper = directory / "g++"
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] == str(directory):  # set up by the parent process
        return str(wrapper)
    if not cpu_has_fma():
        return None
    gxx = shutil.which("g++", path=os.pathsep.join(p for p in path.split(os.pathsep) if p != str(directory)))
    if gxx is None:
        return None
    text = _WRAPPER.format(gxx=gxx, flags=FLAGS)
    if not _wrapper_ready(directory, wrapper, text):
        return None
    os.environ["PATH"] = os.pathsep.join([str(directory), path]) if path else str(directory)
    return str(wrapper)


def _wrapper_ready(directory: Path, wrapper: Path, text: str) -> bool:
    """Whether ``wrapper`` holds ``text`` in a directory only this user can write, writing it
    (under a temporary name, then renamed: concurrent jobs never run half a script) and checking
    that it runs (a ``noexec`` temporary directory would make every MLX compile fail) if not."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = directory.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            return False
        if wrapper.is_file() and wrapper.read_text() == text:
            return True
        tmp = directory / f".g++.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o755)
        ok = subprocess.run([str(tmp), "--version"], capture_output=True, timeout=30).returncode == 0
        if ok:
            tmp.replace(wrapper)
        else:
            tmp.unlink()
        return ok
    except (OSError, subprocess.SubprocessError):
        return False
