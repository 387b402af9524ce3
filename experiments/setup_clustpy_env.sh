#!/usr/bin/env bash
# Create ClustPy's own virtual environment for experiments/bench_vs_clustpy.py,
# installed as a user would: torch first (CPU build), then clustpy from PyPI.
# ClustPy is never a dependency of dcjax; this venv lives outside the repository.
#
#   bash experiments/setup_clustpy_env.sh            # -> /work/venvs/clustpy
#   CLUSTPY_VENV=/some/where bash experiments/setup_clustpy_env.sh
#
# torch==2.13.0 is pinned because a CPU wheel of exactly that version
# (torch-2.13.0+cpu, Python 3.11) is in pip's find-links folder on these
# machines; `==2.13.0` matches the local version `2.13.0+cpu`, and no other
# 2.13.0 build is on the indexes, so pip takes the CPU wheel and no CUDA
# packages. The script checks that afterwards and fails if any nvidia-* package
# or a CUDA build of torch got in. Prints install time and size at the end.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${CLUSTPY_VENV:-/work/venvs/clustpy}"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

# 1. torch first. Show what pip resolves before installing (no download of
#    multi-GB CUDA wheels: stop if the plan names any nvidia package).
plan=$("$VENV/bin/python" -m pip install --dry-run "$TORCH_PIN" 2>&1) || { echo "$plan"; exit 1; }
echo "$plan" | grep -E "Would install|already satisfied" || true
if echo "$plan" | grep -qi "nvidia"; then
    echo "ERROR: installing $TORCH_PIN would pull CUDA packages:" >&2
    echo "$plan" >&2
    exit 1
fi
"$VENV/bin/python" -m pip install "$TORCH_PIN"

# 2. clustpy, keeping the torch we just installed. The constraint matters:
#    clustpy needs torchvision, whose newest release (0.29.x) requires
#    torch>=2.14, and torch 2.14 on the index is a CUDA build that brings
#    ~GBs of nvidia-* wheels. Pinned, pip settles on torchvision 0.28.0 (torch
#    ==2.13.0). That torchvision is itself a CUDA build whose C++ ops cannot
#    load here; see import_clustpy() in experiments/_clustpy_worker.py.
torch_version=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
constraints="$VENV/torch-constraint.txt"
echo "torch==$torch_version" > "$constraints"
"$VENV/bin/python" -m pip install -c "$constraints" clustpy

# 3. checks and a summary.
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import torch
bad = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia"))
assert not bad, f"CUDA packages installed: {bad}"
assert torch.version.cuda is None, f"torch is a CUDA build ({torch.version.cuda})"
print("torch", torch.__version__, "| clustpy", md.version("clustpy"), "| cuda: none")
EOF
# clustpy.deep imports the way the benchmark's worker imports it
PYTHONPATH="$HERE" "$VENV/bin/python" -c \
    "from _clustpy_worker import import_clustpy; import_clustpy(); print('clustpy.deep imports')"
end=$(date +%s)
echo "ClustPy venv: $VENV, $(du -sh "$VENV" | cut -f1), installed in $((end - start)) s"
