import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from compbias.inference import cpu_jit

LINUX_FMA = platform.system() == "Linux" and platform.machine() == "x86_64" and cpu_jit.cpu_has_fma()


def test_fma_flag_is_read_from_the_cpu_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2\nbugs\t\t: spectre_v1\n")
    assert cpu_jit.cpu_has_fma(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma4\n")  # AMD's fma4 is not fma
    assert not cpu_jit.cpu_has_fma(info)
    assert not cpu_jit.cpu_has_fma(tmp_path / "absent")


@pytest.mark.skipif(not LINUX_FMA, reason="x86-64 Linux with fma only")
def test_wrapper_goes_first_on_path_once_and_calls_the_real_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.environ["PATH"])
    wrapper = cpu_jit.use_fma_jit("auto", tmp_path / "bin")
    if wrapper is None:
        pytest.skip("no g++ on PATH")
    assert os.environ["PATH"].split(os.pathsep)[0] == str(tmp_path / "bin")
    text = Path(wrapper).read_text()
    assert cpu_jit.FLAGS in text and str(tmp_path / "bin") not in text  # the real g++, not itself
    assert cpu_jit.use_fma_jit("auto", tmp_path / "bin") == wrapper
    assert os.environ["PATH"].count(str(tmp_path / "bin")) == 1
    out = subprocess.run([wrapper, "--version"], capture_output=True, text=True, check=True)
    assert "g++" in out.stdout or "GCC" in out.stdout


@pytest.mark.skipif(not LINUX_FMA, reason="x86-64 Linux with fma only")
def test_no_wrapper_where_it_could_not_run_or_others_could_write_it(tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "g++").write_text("#!/bin/sh\nexit 1\n")
    (broken / "g++").chmod(0o755)
    monkeypatch.setenv("PATH", str(broken))
    assert cpu_jit.use_fma_jit("auto", tmp_path / "a") is None  # the wrapper's check failed
    assert os.environ["PATH"] == str(broken)
    assert not (tmp_path / "a" / "g++").exists()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert cpu_jit.use_fma_jit("auto", shared) is None
    assert os.environ["PATH"] == "/usr/bin:/bin"


def test_off_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin")
    assert cpu_jit.use_fma_jit("off", tmp_path) is None
    assert os.environ["PATH"] == "/usr/bin"


_SWIGLU = """
import sys
import compbias  # puts the wrapper first unless COMPBIAS_JIT_FMA=off
import mlx.core as mx
from mlx_lm.models.activations import swiglu

mx.set_default_device(mx.cpu)
mx.random.seed(0)
gate, up = mx.random.normal((64, 1536)) * 8, mx.random.normal((64, 1536))
out = swiglu(gate, up)  # mx.compile'd by mlx_lm: built by the JIT
mx.eval(out)
sys.stdout.buffer.write(bytes(memoryview(out)))
"""


@pytest.mark.skipif(not LINUX_FMA, reason="x86-64 Linux with fma only")
def test_jit_kernels_built_with_fma_give_the_same_bits(tmp_path):
    results = {}
    for setting in ("off", "auto"):
        tmp = tmp_path / setting  # a JIT cache of its own: MLX keys built kernels by name only
        tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(tmp), "COMPBIAS_JIT_FMA": setting}
        run = subprocess.run([sys.executable, "-c", _SWIGLU], env=env, capture_output=True, check=True)
        results[setting] = run.stdout
        assert list(tmp.glob("mlx/*/cpu/*.so")), "MLX built no JIT kernel"
    assert len(results["off"]) == 64 * 1536 * 4
    assert results["off"] == results["auto"]
