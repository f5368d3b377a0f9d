#!/usr/bin/env bash
# Give MLX on Linux CPU an optimized BLAS (the mlx[cpu] wheel bundles the slow reference BLAS).
# Prefers Debian/Ubuntu's OpenBLAS (about 3x faster than MKL here); falls back to PyPI's mkl in
# the given virtualenv. compbias finds either automatically (runtime.blas: auto).
set -euo pipefail
venv=${1:-.venv}
[ "$(uname -s)" = Linux ] || exit 0
for lib in /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \
           /usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3 /usr/lib64/libopenblas.so.0; do
    [ -e "$lib" ] && { echo "optimized BLAS: $lib"; exit 0; }
done
if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    if $sudo true 2>/dev/null; then
        ($sudo apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 ||
         { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq libopenblas0-pthread >/dev/null; }) &&
            { echo "optimized BLAS: installed Debian libopenblas0-pthread"; exit 0; }
    fi
fi
echo "no system OpenBLAS; installing PyPI mkl into $venv (or install libopenblas0-pthread yourself)"
"$venv/bin/pip" install -q mkl
