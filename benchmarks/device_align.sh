#!/usr/bin/env bash
# Stage one on one GPU: the align CLI with bf16 autocast (tiny models), then SAID throughput of real
# architectures (random weights; SmolLM2-135M and a SmolLM2-1.7B-shaped model) against the GPU's bf16 peak.
# Expects artifacts/device/ (wheels the GPU image lacks, model configs + tokenizer, ml-100k raw files,
# Scientific items.parquet) and $OUT; results come back as $OUT/results.tar.
set -uo pipefail
D=artifacts/device; W=/tmp/ws
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $D/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi -L
python3 -c "import torch, transformers, accelerate, faiss; print(torch.__version__, transformers.__version__, accelerate.__version__, faiss.__version__, torch.cuda.is_available())"

python3 -m pipeline.cli prepare --set data.path=$D/raw --set workspace.root=$W 2>&1 | tail -1
S="--set workspace.root=$W --set align.mixed_precision=bf16 --set align.evidence.items=64"
/usr/bin/time -f "said cli wall %e s" python3 -m pipeline.cli align $S --set align.lm=$D/tiny-llama \
  --set align.said.epochs=2 --set align.batch_size=64 --log-format json 2>$OUT/said.err | tail -1
grep -E '"event": "(evidence|published|error)"' $OUT/said.err | cut -c1-400
python3 -m pipeline.cli align $S --set align.method=text --set align.encoder=$D/tiny-bert --set align.batch_size=256 \
  --set align.export.index=hnsw 2>&1 | tail -2

ITEMS=$D/scientific-items.parquet
B="python3 -m benchmarks.align_throughput --items $ITEMS --architecture $D/smollm2-arch --mixed-precision bf16 --repeats 3"
$B --batch-size 8 --steps 10 --name device_align/135m_b8 | grep -E "tokens_per_s|fraction|speedup"
$B --batch-size 256 --steps 10 --name device_align/135m_b256 | grep -E "tokens_per_s|fraction|speedup"
BIG="--config-set hidden_size=2048 --config-set intermediate_size=8192 --config-set num_hidden_layers=24 --config-set num_attention_heads=32 --config-set num_key_value_heads=32"
$B $BIG --batch-size 64 --steps 6 --name device_align/1.7b_b64 | grep -E "tokens_per_s|fraction|speedup"
$B $BIG --batch-size 256 --steps 6 --skip-naive --name device_align/1.7b_b256 | grep -E "tokens_per_s|fraction|lm_params"
# The frozen weights kept in bfloat16 (align.lm_dtype) instead of float32 under autocast.
W16="$B --lm-dtype bfloat16 --skip-naive"
$W16 --batch-size 256 --steps 10 --name device_align/135m_b256_bf16w | grep -E "tokens_per_s|fraction"
$W16 $BIG --batch-size 256 --steps 6 --name device_align/1.7b_b256_bf16w | grep -E "tokens_per_s|fraction"
$W16 $BIG --batch-size 512 --steps 4 --name device_align/1.7b_b512_bf16w | grep -E "tokens_per_s|fraction"
tar -cf $OUT/results.tar benchmarks/results/device_align
