"""Benchmark: exact silhouette in dcjax.metrics against scikit-learn.

    python3 experiments/bench_metrics.py            # writes experiments/results/bench_metrics.md

Data: make_blobs with d = 10 and k = 10 (the blob labels are the clustering),
float32, N = 10,000 and 70,000. Each measurement runs in a fresh subprocess so
its memory is its own: the peak RSS a step adds on top of the RSS just
before it (Linux VmHWM, reset first), and the process's ru_maxrss. For dcjax, compile time is measured separately
(`.lower(...).compile()`), then the compiled function is timed (best of
--repeats). scikit-learn's silhouette_score is timed once, under a time limit, on the
float32 data and on the same data as float64 (the accuracy reference).
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D, K = 10, 10


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak() -> None:
    """Make VmHWM restart from the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def _extra_peak_mb(step) -> tuple:
    """(result of step(), peak RSS during step minus RSS just before it)."""
    _reset_peak()
    before = _status_mb("VmRSS")
    result = step()
    return result, _status_mb("VmHWM") - before


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _data(n: int):
    import numpy as np
    from sklearn.datasets import make_blobs
    x, y = make_blobs(n_samples=n, n_features=D, centers=K, random_state=0)
    return x.astype(np.float32), y.astype(np.int32)


def worker_jax(n: int, repeats: int, chunk_size: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    from dcjax import metrics

    x, y = _data(n)
    z, labels = jnp.asarray(x), jnp.asarray(y)
    t = time.perf_counter()
    compiled, compile_mb = _extra_peak_mb(lambda: metrics.silhouette.lower(z, labels, K, chunk_size).compile())
    compile_s = time.perf_counter() - t

    def timed_runs():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            value = compiled(z, labels).block_until_ready()
            times.append(time.perf_counter() - t)
        return float(value), min(times)

    (value, run_s), run_mb = _extra_peak_mb(timed_runs)
    return {"impl": f"dcjax.metrics.silhouette (chunk_size={chunk_size})", "n": n, "compile_s": compile_s,
            "compile_mb": compile_mb, "run_s": run_s, "run_mb": run_mb, "value": value,
            "max_rss_mb": _max_rss_mb(), "device": str(jax.devices()[0])}


def worker_sklearn(n: int, dtype: str) -> dict:
    from sklearn.metrics import silhouette_score

    x, y = _data(n)
    x = x.astype(dtype)
    t = time.perf_counter()
    value, run_mb = _extra_peak_mb(lambda: silhouette_score(x, y))
    return {"impl": f"sklearn.metrics.silhouette_score ({dtype} input)", "n": n, "compile_s": None, "compile_mb": None,
            "run_s": time.perf_counter() - t, "run_mb": run_mb, "value": float(value),
            "max_rss_mb": _max_rss_mb(), "device": "cpu (numpy)"}


def measure(args: list[str], timeout: float) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is JSON."""
    cmd = [sys.executable, __file__, "--worker", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"timed_out": timeout}
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{cmd} failed:\n{e.stderr}") from e
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 70_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--sklearn-timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "bench_metrics.md")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, n = args.worker[0], int(args.worker[1])
        result = worker_jax(n, int(args.worker[2]), int(args.worker[3])) if kind == "jax" else worker_sklearn(n, args.worker[2])
        print(json.dumps(result))
        return

    rows = []
    for n in args.sizes:
        ours = measure(["jax", str(n), str(args.repeats), str(args.chunk_size)], timeout=600)
        print(ours, flush=True)
        results = [ours]
        for dtype in ("float32", "float64"):
            results.append(measure(["sklearn", str(n), dtype], timeout=args.sklearn_timeout))
            results[-1].setdefault("impl", f"sklearn.metrics.silhouette_score ({dtype} input)")
            print(results[-1], flush=True)
        rows.append((n, results))

    import jax
    import sklearn
    lines = [
        "# Exact silhouette: dcjax.metrics vs scikit-learn",
        "",
        f"Reproduce: `python3 experiments/bench_metrics.py --sizes {' '.join(map(str, args.sizes))} "
        f"--repeats {args.repeats} --chunk-size {args.chunk_size} --sklearn-timeout {args.sklearn_timeout:g}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible "
        f"(shared with other jobs, so timings are noisy), jax {jax.__version__} on "
        f"{rows[0][1][0].get('device', '?')}, scikit-learn {sklearn.__version__}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"Data: `make_blobs(N, n_features={D}, centers={K}, random_state=0)` as float32; labels = blob ids.",
        "Compile = jit lowering + XLA compilation, once per shape; run = best of "
        f"{args.repeats} calls of the compiled function (sklearn: one call). Memory, per fresh "
        "subprocess: 'extra' = peak RSS during the step minus RSS just before it (VmHWM reset "
        "through /proc/self/clear_refs); 'max RSS' = the whole process's ru_maxrss (interpreter, "
        "libraries, data, compiler included).",
        "",
        "| N | implementation | compile (s) | compile extra (MB) | run (s) | run extra (MB) | max RSS (MB) | silhouette | rel. diff vs float64 sklearn |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, results in rows:
        reference = results[-1].get("value")
        for r in results:
            if "timed_out" in r:
                lines.append(f"| {n:,} | {r['impl']} | — | — | > {r['timed_out']:g} (killed) | — | — | — | — |")
                continue
            diff = None if reference is None else abs(r["value"] - reference) / abs(reference)
            lines.append(
                f"| {n:,} | {r['impl']} | {_fmt(r['compile_s'], '.2f')} | {_fmt(r['compile_mb'], '.0f')} | "
                f"{r['run_s']:.3f} | {r['run_mb']:.0f} | {r['max_rss_mb']:.0f} | {r['value']:.7f} | {_fmt(diff, '.1e')} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
