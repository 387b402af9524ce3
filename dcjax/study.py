"""Study code: labels, for fitting assessors on other runs and scoring selectors.

Kept apart from what the product runs without labels: `dcjax.selection`
never imports it. `cross_fit` fits the assessor leave-one-group-out on
labelled runs; `truth_table` reads ACC/NMI/ARI, and the metrics compare the
selected, final and oracle-best epochs. A run's label-free table and its
ACC/NMI/ARI side by side are written to and read back from one CSV per run
(`write_run_csv`, `read_run_csv`), as `experiments/selection_study.py` and
the studies built on it use them (`experiments/results/scores/*.csv`); the
tests use them too, so that no test imports experiments/.
"""
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from dcjax import checkpointing, selection
from dcjax.assessor import (ENSEMBLE_TARGETS, assessor_predict, assessor_selector, ensemble_of,
                            guard_margin, train_assessor)
from dcjax.features import ID, LABEL_BASED, lag1_autocorr, scores_table, selection_phase


def cross_fit(runs: list[tuple[pd.DataFrame, pd.DataFrame]], group: str, kind: str = "gbr",
              guard: float = 0.0, scores: dict | None = None, target: str = "rank",
              noise_guard: bool = False, cache: dict | None = None,
              train_on=None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Leave-one-group-out selections over (features, truth) pairs: for every value g of `group`
    ('dataset' or 'algorithm', read from each run's attrs), an assessor is
    trained on the runs whose group is not g and selects on the runs whose
    group is g. Returns {run: selection}. Groups with no other group to train
    on are skipped, so LODO yields nothing until a second data set exists.
    `guard`: a margin, or True for the target's own (`GUARD_MARGINS`).
    If `scores` is a dict, it receives {run: the assessor's per-row prediction}.
    `noise_guard`: see `assessor_selector`. `cache`: a dict kept by the caller
    across calls on the same `runs`, so that an assessor (or an ensemble's
    member) fitted once for (group, held-out value, kind, target) is reused.
    `train_on`: a set of run names; only those may train an assessor (every run
    is still judged): how much the selections depend on the training runs.
    `seed`: the models' random_state (see `_model`)."""
    if train_on is not None and cache is not None:
        raise ValueError("cross_fit: a cache is keyed by held-out group only; pass no cache with train_on")
    out = {}
    values = sorted({f.attrs[group] for f, _ in runs})
    for held_out in values:
        training = [(f, acc) for f, acc in runs if f.attrs[group] != held_out
                    and (train_on is None or f.attrs["run"] in train_on)]
        if not training:
            continue
        def fitted(t):
            key = (group, held_out, kind, t, seed)
            if cache is None:
                return train_assessor(training, kind, target=t, seed=seed)
            if key not in cache:
                cache[key] = train_assessor(training, kind, target=t, seed=seed)
            return cache[key]
        assessor = (ensemble_of({t: fitted(t) for t in ENSEMBLE_TARGETS}) if target == "ensemble"
                    else fitted(target))
        chooser = assessor_selector(assessor, guard_margin(assessor) if guard is True else guard, noise_guard)
        for f, _ in runs:
            if f.attrs[group] == held_out:
                out[f.attrs["run"]] = chooser(f)
                if scores is not None:
                    scores[f.attrs["run"]] = assessor_predict(assessor, f.reset_index(drop=True))
    return out




# ============================================================ 6. study metrics (labels: evaluation only)

DO_NO_HARM = 0.005   # selected ACC within half an ACC point of the final epoch's, or better


def truth_table(workdir, progress: bool = False) -> pd.DataFrame:
    """ACC/NMI/ARI per seed x epoch of the selection phase. These are the
    labels, for scoring selectors (and fitting assessors) only; no selector reads them."""
    table = scores_table(workdir, labels=True, progress=progress)
    table = table[table.phase == selection_phase(workdir)]
    return table[ID + LABEL_BASED].reset_index(drop=True)


def _best_epoch(run: pd.DataFrame, column: str) -> int:
    v = run[column].to_numpy(float)
    return int(run.epoch.to_numpy()[np.flatnonzero(v >= np.nanmax(v) - 1e-12)].max())


def outcomes(selections: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, selector, seed): the selected, final and oracle-best
    epoch (best ACC; an upper bound that no selector can know), their
    ACC/NMI/ARI, the regret (oracle ACC - selected ACC) and the gain over the
    final epoch. `selections`: run, selector, seed, epoch; `truth`: run, seed,
    epoch, acc, nmi, ari."""
    rows = []
    for (run, seed), t in truth.groupby(["run", "seed"], sort=False):
        t = t.set_index("epoch")
        final, oracle = int(t.index.max()), _best_epoch(t.reset_index(), "acc")
        picks = selections[(selections.run == run) & (selections.seed == seed)]
        for pick in picks.itertuples(index=False):
            row = {"run": run, "selector": pick.selector, "seed": seed,
                   "epoch": int(pick.epoch), "final_epoch": final, "oracle_epoch": oracle}
            for m in LABEL_BASED:
                row |= {f"{m}_selected": t.at[int(pick.epoch), m], f"{m}_final": t.at[final, m],
                        f"{m}_oracle": t.at[oracle, m]}
            rows.append(row)
    out = pd.DataFrame(rows)
    out["regret"] = out.acc_oracle - out.acc_selected
    out["gain_vs_final"] = out.acc_selected - out.acc_final
    out["win"] = out.gain_vs_final > 0
    out["do_no_harm"] = out.gain_vs_final >= -DO_NO_HARM
    return out


def summarize(out: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Means over seeds (and runs) per group: ACC/NMI/ARI selected, final,
    oracle; regret; win rate vs final (strictly better ACC); do-no-harm rate."""
    columns = ([f"{m}_{w}" for w in ("selected", "final", "oracle") for m in LABEL_BASED]
               + ["regret", "gain_vs_final", "win", "do_no_harm"])
    table = out.groupby(by, sort=False)[columns].mean()
    table["n"] = out.groupby(by, sort=False).size()
    return table.reset_index()


def wilcoxon_vs(out: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per selector: one-sided Wilcoxon signed-rank test that its ACC is
    greater than `baseline`'s, paired by (run, seed). Zero differences are
    split between the ranks ('zsplit'), so ties count against a difference.
    p is NaN when every pair ties."""
    base = out[out.selector == baseline].set_index(["run", "seed"]).acc_selected
    rows = []
    for name, group in out.groupby("selector", sort=False):
        if name == baseline:
            continue
        d = (group.set_index(["run", "seed"]).acc_selected - base).dropna().to_numpy()
        p = (stats.wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue
             if len(d) and np.any(d != 0) else np.nan)
        rows.append({"selector": name, "baseline": baseline, "pairs": len(d), "mean_diff": float(np.mean(d)),
                     "better": int(np.sum(d > 0)), "worse": int(np.sum(d < 0)), "p_greater": p})
    return pd.DataFrame(rows)


def score_acc_spearman(feats: pd.DataFrame, truth: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Spearman correlation between each column and ACC across the epochs of
    a seed, averaged over seeds: how well the score tracks ACC within one run."""
    merged = feats.merge(truth[ID + ["acc"]], on=ID)
    per_seed = []
    for _, run in merged.groupby("seed"):
        per_seed.append({c: stats.spearmanr(run[c], run.acc, nan_policy="omit").statistic
                         if run[c].nunique() > 1 else np.nan for c in columns if c in run})
    return pd.DataFrame(per_seed).mean()


def oracle_vs_final(truth: pd.DataFrame) -> pd.DataFrame:
    """Per run: how often and by how much the oracle-best epoch beats the final
    one (ACC), and how far apart they are in epochs."""
    rows = []
    for (run, seed), t in truth.groupby(["run", "seed"], sort=False):
        final, oracle = int(t.epoch.max()), _best_epoch(t, "acc")
        acc = t.set_index("epoch").acc.sort_index()
        steps = acc.to_numpy(np.float64)
        rows.append({"run": run, "seed": seed, "final_epoch": final, "oracle_epoch": oracle,
                     "gain": acc[oracle] - acc[final], "epochs_apart": final - oracle,
                     # How smooth ACC is from epoch to epoch: where consecutive epochs are
                     # barely correlated, the oracle picks the luckiest of many noisy draws.
                     "step_change": float(np.mean(np.abs(np.diff(steps)))) if len(steps) > 1 else np.nan,
                     "lag1_autocorr": lag1_autocorr(steps)})
    per_seed = pd.DataFrame(rows)
    return per_seed.groupby("run", sort=False).agg(
        seeds=("seed", "size"), differs=("gain", lambda g: float(np.mean(g > 0))),
        differs_by_half_point=("gain", lambda g: float(np.mean(g > DO_NO_HARM))),
        mean_gain=("gain", "mean"), max_gain=("gain", "max"),
        mean_epochs_apart=("epochs_apart", "mean"), oracle_epochs=("oracle_epoch", lambda e: list(e)),
        step_change=("step_change", "mean"), lag1_autocorr=("lag1_autocorr", "mean")).reset_index()


# ============================================================ a run's study table, one CSV per run

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
