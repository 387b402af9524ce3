#!/usr/bin/env bash
# A new user's transcript: a fresh venv (/tmp/venv-door), pip install of this repository, then the
# README's commands in order in /tmp/newuser, each timed (full protocol). Writes to stdout:
#   bash experiments/new_user_transcript.sh > experiments/results/new_user_transcript.log
set -uo pipefail
step() { echo; echo "\$ $*"; local t0=$(date +%s.%N); bash -c "$*" 2>&1 | tr '\r' '\n' | grep -avE 'epoch/s|s/epoch|figure/s|seed/s|epoch \[' | tail -n "${TAIL:-15}"; local rc=${PIPESTATUS[0]}; local t1=$(date +%s.%N); printf '[exit %s, %.1f s wall]\n' "$rc" "$(echo "$t1 - $t0" | bc)"; }
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
rm -rf /tmp/venv-door /tmp/newuser && mkdir -p /tmp/newuser
cd /tmp/newuser
echo "python: $(python3 --version); date: $(date -u)"
step python3 -m venv /tmp/venv-door
export PATH=/tmp/venv-door/bin:$PATH
unset PYTHONPATH
TAIL=3 step pip install --quiet "$REPO"
step "pip list 2>/dev/null | grep -iE '^(jax|jaxlib|flax|dcjax) '"
step dcjax --help
step dcjax train --config dec_digits
step "python -c \"from sklearn.datasets import load_wine; load_wine(as_frame=True).data.to_csv('wine.csv', index=False)\""
cat > fit.py <<'PY'
import pandas as pd
from dcjax import DKM   # also AEKMeans, DEC, IDEC, DCN, DECCS; UnseenDCN/DEC/DKM when k is unknown

X = pd.read_csv("wine.csv").to_numpy()
model = DKM(n_clusters=3, n_seeds=3).fit(X)
print(model.labels_[:20])        # the clusters chosen without labels
print(model.selected_epoch_)     # per seed: the epoch chosen
print(model.launch_["why"])      # which seed the launch kept, and why
PY
step python fit.py
step "dcjax train --config dkm --config.dataset.name=wine.csv --config.dataset.n_clusters=3 --config.seeds=3 --config.batch_size=178 --workdir runs/dkm_wine"
step dcjax select --workdir runs/dkm_wine
step dcjax report --workdir runs/dkm_wine
TAIL=60 step dcjax train --config dkm --show-config
TAIL=40 step dcjax select --help
echo "done: $(date -u)"
