#!/usr/bin/env bash
# RecBole 1.2.1, the peer we compare with, in its own virtual environment (.venv-recbole), never ours.
# Pins it needs on current Python/torch (PEERS.md): numpy<2 (np.float_), setuptools<81 (pkg_resources for ray).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RECBOLE_VENV:-.venv-recbole}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"$VENV/bin/python" -c "import torch" 2>/dev/null \
  || "${PIP[@]}" install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu --retries 0
"${PIP[@]}" install --quiet "recbole==1.2.1" "numpy<2" "setuptools<81" "pandas<2.2"
"$VENV/bin/python" -c "import recbole; print('recbole', recbole.__version__)"
