"""What a study of runs needs with labels, kept apart from what the product
runs without them: a run's label-free table and its ACC/NMI/ARI side by
side, written to and read back from one CSV per run.

`experiments/selection_study.py` and the studies built on it
(`experiments/results/scores/*.csv`) use these; the tests use them so that
no test imports experiments/. Nothing in `dcjax` imports this module.
"""
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcjax import checkpointing, selection

INFO = ["run", "dataset", "algorithm", "phase"]   # the run's identity, on every row of its CSV


def write_run_csv(workdir, directory) -> Path:
    """Score the run (cached in its scores.csv, with labels) and write its
    base table and ACC/NMI/ARI, rounded, to `directory`/<dataset>_<algorithm>[_s<first seed>].csv."""
    directory = Path(directory)
    t0 = time.perf_counter()
    scores = selection.scores_table(workdir, labels=True)
    base = selection.base_table(workdir, scores=scores)
    info = base.attrs
    truth = scores[scores.phase == info["phase"]][selection.ID + selection.LABEL_BASED]
    table = base.merge(truth, on=selection.ID, how="left")
    for key in INFO:
        table.insert(INFO.index(key), key, info[key])
    directory.mkdir(parents=True, exist_ok=True)
    first_seed = int(checkpointing.load_config(workdir).seed)   # a later batch of seeds: its own file
    path = directory / (f"{info['dataset']}_{info['algorithm']}" + (f"_s{first_seed}" if first_seed else "") + ".csv")
    table.to_csv(path, index=False, float_format="%.5g")
    print(f"{workdir}: {len(table)} rows -> {path} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return path


def read_run_csv(path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(label-free base table with the run's info in attrs, truth table)."""
    table = pd.read_csv(path)
    info = {key: table[key].iloc[0] for key in INFO}
    base = table.drop(columns=INFO + selection.LABEL_BASED)
    base.attrs.update(info)
    truth = table[selection.ID + selection.LABEL_BASED].assign(run=info["run"])
    return base, truth


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_targets(out: pd.DataFrame, selector: str, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """Per target measure of `selector`: the value on all pairs, a 95% percentile
    interval over `resamples` cluster-bootstrap resamples of (data set, seed),
    and the share of resamples in which the target is met."""
    sel = out[out.selector == selector].reset_index(drop=True)
    clusters = list(sel.groupby(["dataset", "seed"]).indices.values())
    measures = {"mean regret": (lambda g: 100 * g.regret.mean(), lambda v: v <= 1.0, "≤ 1.0"),
                "p90 regret": (lambda g: 100 * g.regret.quantile(0.9), lambda v: v <= 3.0, "≤ 3.0"),
                "do-no-harm %": (lambda g: 100 * g.do_no_harm.mean(), lambda v: v >= 95.0, "≥ 95"),
                "gain vs final": (lambda g: 100 * g.gain_vs_final.mean(), lambda v: v > 0.0, "> 0")}
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in measures}
    for _ in range(resamples):
        rows = np.concatenate([clusters[k] for k in rng.integers(len(clusters), size=len(clusters))])
        g = sel.iloc[rows]
        for name, (measure, _, _) in measures.items():
            draws[name].append(measure(g))
    table = []
    for name, (measure, met, target) in measures.items():
        v = np.asarray(draws[name])
        lo, hi = np.percentile(v, [2.5, 97.5])
        table.append({"measure": name, "target": target, "all pairs": f"{measure(sel):.2f}",
                      "95% interval": f"{lo:.2f} – {hi:.2f}", "resamples meeting the target": f"{100 * met(v).mean():.0f}%"})
    return pd.DataFrame(table)
