#!/usr/bin/env bash
# Train the larger embedded model (configs/pretrain-gpu.yaml) on one GPU machine in one command of at most 9 minutes.
#
#   here:    make embedded-data && bash tools/train_embedded_gpu.sh pack && bash tools/train_embedded_gpu.sh wheels
#              -> data/embedded-gpu.tar.gz: the exported training data (Parquet), one compact file to carry
#              -> .whl/: the wheels the device's Python lacks (jsonargparse[signatures]), for its Python 3.12
#   device:  bash tools/train_embedded_gpu.sh train
#              (run tool: carry ["data/embedded-gpu.tar.gz", ".whl"], timeout 600)
#              -> $OUT/config.json, $OUT/model.safetensors (< 16 MB), $OUT/loss_curve.csv, $OUT/train.log
#   here, before spending device time: REHEARSE=1 PYTHON=... OUT=/tmp/out bash tools/train_embedded_gpu.sh train
#              -> the same steps, 3 of them on the CPU, into runs/pretrain-gpu-rehearsal (PYTHON: one as bare as the
#                 device's, so that a module the wheels miss shows here)
#   here:    bash tools/train_embedded_gpu.sh ship FILES_AT MINUTES
#              -> evaluates the weights on data/embedded/validation next to the shipped ones and the baselines
#                 (tools/ship_embedded_model.py) and ships them only if they score better
#
# The device has no network. Its python3 (3.12) holds torch (CUDA), lightning, pandas, pyarrow, safetensors and
# einops (the device tool's KINDS.md), not jsonargparse: `train` installs the carried .whl/ into /tmp/site first,
# and says which module is still missing otherwise (PYTHON picks another interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=data/embedded-gpu.tar.gz
RUN=runs/pretrain-gpu
WHEELS=.whl
# The training CLI's parser and what its `signatures` extra needs, at the project environment's versions.
CLI_WHEELS=(jsonargparse docstring_parser typeshed_client)

case "${1:-}" in
  pack)
    test -d data/embedded/train || { echo "no data/embedded/train: run make embedded-data first" >&2; exit 1; }
    tar -czf "$ARCHIVE" data/embedded/train data/embedded/synthetic
    ls -l "$ARCHIVE"
    ;;
  wheels)
    # Pure-Python wheels, so one download serves the device's Python 3.12 whatever this machine runs.
    versions=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" "${CLI_WHEELS[@]}")
    rm -rf "$WHEELS"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$WHEELS" $versions
    ls -l "$WHEELS"
    ;;
  train)
    PYTHON=${PYTHON:-python3}
    : "${OUT:?OUT must name the folder whose files come back (the device sets it)}"
    if compgen -G "$WHEELS/*.whl" > /dev/null; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    "$PYTHON" - "${CLI_WHEELS[@]}" <<'PY'
import importlib.util, sys
needed = ("torch", "lightning", "pandas", "pyarrow", "safetensors", "einops", *sys.argv[1:])  # argv: CLI_WHEELS
missing = [m for m in needed if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"train_embedded_gpu.sh: this Python lacks {missing}: carry .whl/ (`bash tools/train_embedded_gpu.sh "
             "wheels` here) or set PYTHON to one that has them")
import os, torch
if os.environ.get("REHEARSE"):
    print("torch", torch.__version__, "rehearsal: 3 steps on the CPU")
elif not torch.cuda.is_available():
    sys.exit("train_embedded_gpu.sh: torch sees no CUDA device")
else:
    print("torch", torch.__version__, torch.cuda.get_device_name(0))
PY
    test -d data/embedded/train || tar -xzf "$ARCHIVE"
    rehearsal=()
    if [ -n "${REHEARSE:-}" ]; then  # the same steps, tiny, into a folder of their own
      RUN=runs/pretrain-gpu-rehearsal
      rehearsal=(--trainer.accelerator cpu --trainer.max_steps 3 --trainer.val_check_interval 3 --data.batch_size 2
                 --data.num_workers 0 --data.max_val_series 4 --history.every_n_steps 1 --trainer.default_root_dir "$RUN")
    fi
    start=$(date +%s)
    # 8.5 minutes at most, whatever happens; trainer.max_time stops training earlier and exports the best weights
    timeout 510 "$PYTHON" -m train.cli fit --config configs/pretrain-gpu.yaml "${rehearsal[@]}" 2>&1 | tee "$OUT/train.log" || true
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
    echo "usage: $0 pack | wheels | train | ship FILES_AT MINUTES" >&2
    exit 2
    ;;
esac
