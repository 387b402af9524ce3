"""A second process with the same shapes: how much compiling the persistent cache saves.

    python experiments/bench_compile_cache.py [--out experiments/results/pipeline_compile.json]

Runs the same small estimator fit (DEC on scikit-learn's wine table, 2
seeds, 20 + 20 epochs) in two fresh processes sharing one new, empty cache
folder, and in a third with the cache off. Each process sums JAX's own
compile-time events (`jax.monitoring`): XLA's backend compilation, and the
time spent loading programs from the cache. Prints and writes one JSON
object.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import collections, json, sys, time
import jax
durations = collections.Counter()
jax.monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: durations.update({name: secs}))
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler
from dcjax.estimators import DEC
x = StandardScaler().fit_transform(load_wine().data).astype("float32")
t0 = time.perf_counter()
DEC(n_clusters=3, n_seeds=2, random_state=0, pretrain_epochs=20, clustering_epochs=20, batch_size=64).fit(x)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": round(wall, 1),
                  "backend_compile_s": round(durations["/jax/core/compile/backend_compile_duration"], 2),
                  "cache_retrieval_s": round(durations["/jax/compilation_cache/cache_retrieval_time_sec"], 2),
                  "trace_and_lower_s": round(durations["/jax/core/compile/jaxpr_trace_duration"]
                                             + durations["/jax/core/compile/jaxpr_to_mlir_module_duration"], 2)}))
"""


def fit(cache: str) -> dict:
    env = {"DCJAX_COMPILATION_CACHE": cache, "PYTHONPATH": str(REPO)}
    import os
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=os.environ | env,
                         cwd=tempfile.gettempdir(), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "experiments" / "results" / "pipeline_compile.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        first, second = fit(cache), fit(cache)
        entries = len(list(Path(cache).iterdir()))
    off = fit("off")
    result = {"date": time.strftime("%Y-%m-%d"), "first_process": first, "second_process": second,
              "cache_off": off, "cache_entries": entries,
              "second_over_first_compile": round(
                  (second["backend_compile_s"] + second["cache_retrieval_s"]) / max(first["backend_compile_s"], 1e-9), 3)}
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
