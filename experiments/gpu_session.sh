#!/usr/bin/env bash
# One prepared run for a lent GPU machine (the `device` tool; see the GPU rows
# of experiments/results/bench_vs_clustpy.md). The machine is bare and offline:
# what dcjax and ClustPy need beyond its image travels as wheels in .whl/ and
# the data in .gpudata/ (both git-ignored), copied beforehand on this machine:
#
#   mkdir -p .whl .gpudata && cp ../shared/data/{usps,mnist}.npz .gpudata/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl ml-collections ruptures diptest
#   python3.12 -m pip wheel --no-deps -w .whl clustpy        # clustpy has a C extension
#
# then, through the device tool, with carry [".whl", ".gpudata"]:
#
#   bash experiments/gpu_session.sh [MNIST_FIRST_SEED] [MNIST_SEEDS] [MNIST_SECONDS]
#
# 1. The benchmark against ClustPy on the GPU, USPS: 1 seed each, alternating,
#    every phase; dcjax's cost of 10 seeds in one (vmapped) launch against 1.
# 2. The published protocol on MNIST for seeds FIRST..FIRST+SEEDS-1 in one
#    launch (experiments/protocol.py), cut off after MNIST_SECONDS; every
#    algorithm that finished has its per-seed results in the returned json.
# Everything worth keeping is copied to $OUT.
set -uo pipefail
FIRST=${1:-3}
SEEDS=${2:-7}
BUDGET=${3:-330}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false DCJAX_DATA_DIR=$PWD/.gpudata
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import jax, flax, optax, orbax.checkpoint, torch, clustpy; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__, torch.cuda.is_available())"

start=$(date +%s)
timeout ${BENCH_SECONDS:-240} python3 experiments/bench_vs_clustpy.py --device cuda --threads 16 --epochs 5 --repeats 3 \
    --phases pretrain,dec,idec,dcn,dkm --seeds-list 1,10 --scaling-parallelism vmap \
    --clustpy-python "$(command -v python3)" --workdir /tmp/bench --section gpu --output "$OUT/bench_vs_clustpy.md" \
    2>&1 | tee "$OUT/bench.log"
cp /tmp/bench/clustpy_worker.log "$OUT/" 2>/dev/null
echo "bench: $(( $(date +%s) - start )) s"

start=$(date +%s)
timeout "$BUDGET" python3 experiments/protocol.py --dataset mnist --seeds "$SEEDS" --first-seed "$FIRST" \
    --runs /tmp/runs 2>&1 | tee "$OUT/protocol.log"
echo "protocol: $(( $(date +%s) - start )) s"
cp experiments/results/protocol_mnist_s"$FIRST".{json,md} "$OUT/" 2>/dev/null
ls -la "$OUT"
