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
#   STEPS=fmnist,unseen,unseen_public,deccs,scale bash experiments/gpu_session.sh   # a second call: the rows still open
#
# STEPS (default pipeline,bench,compile,protocol) picks the steps; each has its own
# timeout, so one call stays under the device tool's 10 minutes:
# pipeline: the loop (background writer, snapshot blocks) against the bare
#    epoch, before and after, 1 and 10 seeds, USPS then MNIST
#    (experiments/bench_pipeline.py; targets: after <= 1.3x bare), and the
#    10-seed epoch's profile (experiments/profile_seed_scaling.py --trace).
# 1. The benchmark against ClustPy on the GPU, USPS: 1 seed each, alternating,
#    every phase; dcjax's cost of 10 seeds in one (vmapped) launch against 1.
# 2. The published protocol on MNIST for seeds FIRST..FIRST+SEEDS-1 in one
#    launch (experiments/protocol.py), cut off after MNIST_SECONDS; every
#    algorithm that finished has its per-seed results in the returned json.
# compile: a second process's compilation with the persistent cache (experiments/bench_compile_cache.py).
# fmnist: the protocol on Fashion-MNIST, 5 seeds (the launch-level table's MNIST-size rows).
# unseen: UNSEEN's MNIST cell chunks (experiments/unseen_reproduce.py --train mnist:0:5).
# unseen_public: UNSEEN's MNIST and Fashion-MNIST cells under the public code's set-up (issue 34:
#    --preset public --train mnist:0:5, then fmnist:0:5).
# deccs: DECCS on MNIST (experiments/deccs_study.py --datasets mnist).
# scale: the reading side at MNIST x 10 seeds on the GPU machine (experiments/bench_scale.py).
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

STEPS=",${STEPS:-pipeline,bench,compile,protocol},"
step() { [[ "$STEPS" == *",$1,"* ]]; }

if step pipeline; then
start=$(date +%s)
timeout ${PIPELINE_SECONDS:-150} python3 experiments/bench_pipeline.py --seeds-list 1,10 --phases pretrain,dec,dkm \
    --phases-many pretrain,dec --epochs 50 --epochs-many 50 --repeats 3 --repeats-many 3 --parts \
    --scratch /tmp/pipeline --output "$OUT/pipeline_gpu_usps.md" 2>&1 | tail -12
timeout ${PIPELINE_MNIST_SECONDS:-120} python3 experiments/bench_pipeline.py --dataset mnist --seeds-list 1,10 \
    --phases pretrain,dec --phases-many pretrain,dec --epochs 20 --epochs-many 20 --repeats 2 --repeats-many 2 \
    --scratch /tmp/pipeline --output "$OUT/pipeline_gpu_mnist.md" 2>&1 | tail -8
timeout ${PROFILE_SECONDS:-90} python3 experiments/profile_seed_scaling.py --seeds-list 1,10 --trace "$OUT/trace" \
    --output "$OUT/seed_scaling_gpu.md" 2>&1 | tail -12
echo "pipeline: $(( $(date +%s) - start )) s"
fi

if step bench; then
start=$(date +%s)
timeout ${BENCH_SECONDS:-240} python3 experiments/bench_vs_clustpy.py --device cuda --threads 16 --epochs 5 --repeats 3 \
    --phases pretrain,dec,idec,dcn,dkm --seeds-list 1,10 --scaling-parallelism vmap \
    --clustpy-python "$(command -v python3)" --workdir /tmp/bench --section gpu --output "$OUT/bench_vs_clustpy.md" \
    2>&1 | tee "$OUT/bench.log"
cp /tmp/bench/clustpy_worker.log "$OUT/" 2>/dev/null
echo "bench: $(( $(date +%s) - start )) s"
fi

if step compile; then
timeout 180 python3 experiments/bench_compile_cache.py --out "$OUT/pipeline_compile.json" 2>&1 | tail -30
fi

if step protocol; then
start=$(date +%s)
timeout "$BUDGET" python3 experiments/protocol.py --dataset mnist --seeds "$SEEDS" --first-seed "$FIRST" \
    --runs /tmp/runs 2>&1 | tee "$OUT/protocol.log"
echo "protocol: $(( $(date +%s) - start )) s"
cp experiments/results/protocol_mnist_s"$FIRST".{json,md} "$OUT/" 2>/dev/null
fi

if step fmnist; then
cp ../shared/data/fmnist.npz .gpudata/ 2>/dev/null
timeout ${FMNIST_SECONDS:-200} python3 experiments/protocol.py --dataset fmnist --seeds 5 --runs /tmp/runs 2>&1 | tail -20
cp experiments/results/protocol_fmnist*.{json,md} "$OUT/" 2>/dev/null
fi
if step unseen; then
timeout ${UNSEEN_SECONDS:-150} python3 experiments/unseen_reproduce.py --train mnist:0:5 --runs /tmp/unseen 2>&1 | tail -20
cp -r experiments/results/unseen "$OUT/" 2>/dev/null
fi
if step unseen_public; then
cp ../shared/data/fmnist.npz .gpudata/ 2>/dev/null
for ds in mnist fmnist; do
timeout ${UNSEEN_SECONDS:-150} python3 experiments/unseen_reproduce.py --preset public --train $ds:0:5 --runs /tmp/unseen 2>&1 | tail -20
done
cp -r experiments/results/unseen "$OUT/" 2>/dev/null
fi
if step deccs; then
timeout ${DECCS_SECONDS:-150} python3 experiments/deccs_study.py --datasets mnist --seeds 5 --runs /tmp/deccs 2>&1 | tail -20
cp experiments/results/deccs*.csv "$OUT/" 2>/dev/null
fi
if step scale; then
timeout ${SCALE_SECONDS:-400} python3 experiments/bench_scale.py --root /tmp/scale 2>&1 | tail -30
cp experiments/results/scale.{md,json} "$OUT/" 2>/dev/null
fi
ls -la "$OUT"
