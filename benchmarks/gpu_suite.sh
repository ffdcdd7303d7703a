#!/usr/bin/env bash
# Every GPU measurement of issue 19 in one call of at most 8 minutes (benchmarks/gpu_suite.py; docs/benchmarks.md).
#
# The lent GPU machine has python3 with torch, triton, transformers and accelerate but not diffusers or ftfy,
# and no network. Before the call, here, in the repository root (pip works here):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 ftfy==6.3.1 wcwidth==0.9.4 importlib_metadata==10.2.0 lazy-importer==0.1.0
#
# then call the device tool with carry [".whl"] and the command `bash benchmarks/gpu_suite.sh` (timeout_s 540).
# The results come back through $OUT: gpu_suite_cuda.json and gpu_suite.log; copy the JSON to
# benchmarks/results/gpu_suite_cuda.json. Extra arguments go to gpu_suite.py (--budget-s, --device).
set -uo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_suite.sh: the carried wheels did not install" >&2; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # vc2_core from this checkout (it is not installed there)
export PYTHONUNBUFFERED=1
python3 -c "import diffusers, ftfy" \
    || { echo "gpu_suite.sh: diffusers and ftfy are needed (the VAE, the tokenizer): carry .whl/, see the top" >&2; exit 1; }

results="${OUT:-benchmarks/results}"
mkdir -p "$results"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$results/gpu_suite.log"
# 460 s for the whole script; the suite's own budget (default 420 s) skips the parts that would not fit
timeout 460 python3 benchmarks/gpu_suite.py --out "$results/gpu_suite_cuda.json" "$@" 2>&1 | tee -a "$results/gpu_suite.log"
status=${PIPESTATUS[0]}
echo "gpu_suite.sh: exit status $status; results in $results" | tee -a "$results/gpu_suite.log"
exit "$status"
