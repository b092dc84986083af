#!/bin/sh
# Installs the baseline that `pqcc bench sign` compares against: pqc-gpu-driver 0.1.0
# from PyPI, into a virtual environment at target/bench-venv (where `pqcc bench sign`
# looks for it by default). Run from anywhere inside the repository.
set -eu
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
venv="$root/target/bench-venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet pqc-gpu-driver==0.1.0
"$venv/bin/python" -c 'import pqc_gpu_driver; print("pqc-gpu-driver", pqc_gpu_driver.__version__, "installed in '"$venv"'")'
