#!/usr/bin/env bash
# The GPU measurements of issue 7, in three device calls of under 10 minutes each.
#
# Here, once per session (the wheels are what the GPU image lacks; see docs/performance.md):
#   echo /.whl/ >> .git/info/exclude; ../shared/tools/device-wheels.sh
# Then three device `run` calls, each with carry [".whl"] and timeout 600:
#   FAKET_DASK_COMMIT=<git rev-parse HEAD> bash benchmarks/gpu_session.sh 1   # GPU tests + suite
#   FAKET_DASK_COMMIT=<sha> bash benchmarks/gpu_session.sh 2                  # style ablation
#   FAKET_DASK_COMMIT=<sha> bash benchmarks/gpu_session.sh 3                  # generate, 1 and 2 threads
# Everything lands in $OUT (logs and JSON); copy the JSON into benchmarks/results/ and fill the
# tables of docs/performance.md from it.
#
# FAKET_DASK_GPU_SESSION_SMOKE=1 runs the same three phases at tiny sizes (any machine, CPU
# too), to check the script itself.
set -uo pipefail
phase=${1:?usage: gpu_session.sh 1|2|3}
out=${OUT:-/tmp/faket-dask-gpu-session}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
smoke=${FAKET_DASK_GPU_SESSION_SMOKE:-0}
if [ "$smoke" != 1 ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
if [ -z "${FAKET_DASK_COMMIT:-}" ]; then
  FAKET_DASK_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  export FAKET_DASK_COMMIT
fi
py=${PYTHON:-python3}
if [ "$smoke" = 1 ]; then
  suite=tiny gen_n=3 gen_args=(--shape 64 64 --angles=-30:30:15 --thickness 32)
else
  suite=gpu gen_n=12 gen_args=(--shape 1024 1024 --angles=-60:60:2 --thickness 256)
fi

case "$phase" in
  1)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu-info.txt"
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
      | tee -a "$out/gpu-info.txt"
    # the GPU-marked tests first: they say whether the CUDA paths work at all
    timeout 150 "$py" -m pytest -q -p no:cacheprovider -m gpu -rs tests/ 2>&1 \
      | tee "$out/gpu-tests.log" | tail -25
    "$py" benchmarks/bench.py --suite "$suite" --profile --json "$out/$suite.json" 2>&1 \
      | tee "$out/$suite.log"
    ;;
  2)
    "$py" benchmarks/bench.py --suite "$suite" --ablation --json "$out/$suite-ablation.json" 2>&1 \
      | tee "$out/$suite-ablation.log"
    ;;
  3)
    for t in 1 2; do
      timeout 280 "$py" benchmarks/bench_generate.py --n "$gen_n" --workers 1 \
        --threads-per-worker "$t" "${gen_args[@]}" --occupancy 0.1 --style \
        --json "$out/generate-$suite-t$t.json" 2>&1 | tail -40 | tee -a "$out/generate-$suite.log"
    done
    ;;
  *)
    echo "error: unknown phase $phase; use 1, 2 or 3" >&2
    exit 2
    ;;
esac
ls -l "$out"
