#!/usr/bin/env bash
# Run on a lent GPU machine in one call (see the `device` tool): installs the package with the GPU extra from
# wheels carried in .whl/ when present, then runs benchmarks/gpu_check.py and prints docs/benchmarks.md's gpu section.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py
