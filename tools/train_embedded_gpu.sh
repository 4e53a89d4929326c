#!/usr/bin/env bash
# Train the larger embedded model (configs/pretrain-gpu.yaml) on one GPU machine in one command of at most 9 minutes.
#
#   here:    make embedded-data && bash tools/train_embedded_gpu.sh pack
#              -> data/embedded-gpu.tar.gz: the exported training data (Parquet), one compact file to carry
#   device:  bash tools/train_embedded_gpu.sh train        (run tool: carry ["data/embedded-gpu.tar.gz"], timeout 600)
#              -> $OUT/config.json, $OUT/model.safetensors (< 16 MB), $OUT/loss_curve.csv, $OUT/train.log
#   here:    bash tools/train_embedded_gpu.sh ship FILES_AT MINUTES
#              -> evaluates the weights on data/embedded/validation next to the shipped ones and the baselines
#                 (tools/ship_embedded_model.py) and ships them only if they score better
#
# The device has no network: `train` needs a Python there with torch (CUDA), lightning, jsonargparse, pandas,
# pyarrow and safetensors (PYTHON, default python3), and says which one is missing otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=data/embedded-gpu.tar.gz
RUN=runs/pretrain-gpu

case "${1:-}" in
  pack)
    test -d data/embedded/train || { echo "no data/embedded/train: run make embedded-data first" >&2; exit 1; }
    tar -czf "$ARCHIVE" data/embedded/train data/embedded/synthetic
    ls -l "$ARCHIVE"
    ;;
  train)
    PYTHON=${PYTHON:-python3}
    : "${OUT:?OUT must name the folder whose files come back (the device sets it)}"
    "$PYTHON" - <<'PY'
import importlib, sys
missing = [m for m in ("torch", "lightning", "jsonargparse", "pandas", "pyarrow", "safetensors", "einops")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"train_embedded_gpu.sh: this Python lacks {missing}; set PYTHON to one that has them")
import torch
if not torch.cuda.is_available():
    sys.exit("train_embedded_gpu.sh: torch sees no CUDA device")
print("torch", torch.__version__, torch.cuda.get_device_name(0))
PY
    tar -xzf "$ARCHIVE"
    start=$(date +%s)
    # 8.5 minutes at most, whatever happens; trainer.max_time stops training earlier and exports the best weights
    timeout 510 "$PYTHON" -m train.cli fit --config configs/pretrain-gpu.yaml 2>&1 | tee "$OUT/train.log" || true
    cp "$RUN/export/config.json" "$RUN/export/model.safetensors" "$RUN/loss_curve.csv" "$RUN/loss_curve.png" "$OUT/"
    echo "minutes $(( ($(date +%s) - start) / 60 ))" | tee -a "$OUT/train.log"
    ls -l "$OUT"
    ;;
  ship)
    FILES=${2:?the folder the device files came back to}
    MINUTES=${3:?wall minutes of the device run (train.log ends with them)}
    mkdir -p "$RUN/export"
    cp "$FILES/config.json" "$FILES/model.safetensors" "$RUN/export/"
    cp "$FILES/loss_curve.csv" "$FILES/loss_curve.png" "$RUN/"
    .venv/bin/python tools/ship_embedded_model.py "$RUN" --config configs/pretrain-gpu.yaml --contexts 512 --ensembles 128,512,2048 \
      --minutes "$MINUTES"
    ;;
  *)
    echo "usage: $0 pack | train | ship FILES_AT MINUTES" >&2
    exit 2
    ;;
esac
