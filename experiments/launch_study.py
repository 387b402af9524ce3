"""Which clustering of a whole launch to use? Scores `dcjax.launch`'s
selectors on launches of 5 seeds (one data set x algorithm x batch of seeds)
against the baselines a user has today, with the labels.

    python experiments/launch_study.py --export runs/protocol/digits_s10/{ae_kmeans,dec,idec,dcn,dkm}
    python experiments/launch_study.py            # the analysis, from committed files alone

1. --export: per run, the per-epoch score table (as selection_study.py
   writes it, in experiments/results/scores_launch/) and every (seed, epoch) partition
   with the reference embeddings (`launch.save_partitions`,
   experiments/results/partitions/, ~0.1-2 MB per run). Nothing later
   needs the run.
2. Per launch: the per-seed choices of the product's default per-seed
   selector (the committed primary assessor, `assessor_guarded`), the launch
   table (`launch.launch_table`: every seed x epoch and two consensus
   partitions), and every launch selector's choice. Labels then score them:
   ACC of the choice; the random seed's final epoch (its expected value, the
   mean over seeds); the baselines; the launch oracle (best ACC over all
   seeds x epochs) and the median seed-final.
3. Targets, averaged over launches: gain over the random-seed final >= +2.0
   ACC points; regret to the oracle <= 2.0; worse than the median seed-final
   in <= 10% of launches. One-sided tests against each baseline, paired by
   launch: a cluster bootstrap over (data set, seed batch) groups (the five
   algorithms of a batch share one pretraining) and Wilcoxon's signed-rank.
   The section '## Launch-level selection' of selection.md is rewritten.
4. The per-seed selectors on the same new seeds, out of sample: the primary
   and the primary with the collapse rule (fixed before these seeds were
   scored) against the per-seed targets.
"""
import argparse
import logging
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from selection_study import markdown, read_run_csv, write_run_csv  # noqa: E402

from dcjax import checkpointing, config as config_lib, data, launch, metrics, selection  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PARTITIONS = RESULTS / "partitions"
# The launches' per-epoch score tables: beside scores/, not in it. scores/ holds
# the tables the per-seed study (and the shipped assessor) trained on; these
# seeds came after, and stay out of sample until that study is re-run with them.
LAUNCH_SCORES = RESULTS / "scores_launch"
ASSESSOR = RESULTS / "assessor_selection.joblib"    # the primary, as `python -m dcjax.select` uses it
SECTION = "## Launch-level selection"
PER_SEED = "assessor_guarded"                       # the product's default per-seed selector
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 0
GAIN_TARGET, REGRET_TARGET, WORSE_TARGET = 0.02, 0.02, 0.10
ORDER = ("ae_kmeans", "dec", "idec", "dcn", "dkm")


def stem(workdir: Path) -> str:
    """<dataset>_<algorithm>_s<first seed>, as the score tables are named."""
    config = checkpointing.load_config(workdir)
    first = int(config.seed)
    return f"{config.dataset.name}_{config.algorithm}" + (f"_s{first}" if first else "")


def export(workdir: Path):
    t0 = time.perf_counter()
    LAUNCH_SCORES.mkdir(parents=True, exist_ok=True)
    path = write_run_csv(workdir)
    path.replace(LAUNCH_SCORES / path.name)
    path = launch.save_partitions(launch.read_partitions(workdir), PARTITIONS / f"{stem(workdir)}.npz")
    print(f"{workdir}: partitions -> {path} ({path.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.0f} s)",
          flush=True)


# ------------------------------------------------------------ one launch

def ground_truth(dataset: str, algorithm: str) -> np.ndarray:
    return np.asarray(data.load_dataset(config_lib.make_config(algorithm, dataset).dataset).y)


def accuracy(y: np.ndarray, labels: np.ndarray, k: int) -> float:
    return float(metrics.cluster_accuracy(jnp.asarray(y), jnp.asarray(labels, jnp.int32), k, int(y.max()) + 1))


def study_launch(name: str, assessor: dict) -> tuple[dict, pd.DataFrame]:
    """One launch: the ACC of every selector's and baseline's choice, and
    the per-seed picks (for the per-seed out-of-sample check)."""
    base, truth = read_run_csv(LAUNCH_SCORES / f"{name}.csv")
    feats = selection.features(base)
    parts = launch.load_partitions(PARTITIONS / f"{name}.npz")
    per_seed = selection.select(feats, PER_SEED, assessor)
    collapse = selection.collapse_guard(feats, per_seed)
    chosen = dict(zip(per_seed.seed, per_seed.epoch))
    final = max(parts.epochs)
    at_final = feats[feats.epoch == final].set_index("seed")
    consensus = launch.consensus_candidates(parts, chosen)
    table = launch.launch_table(parts, chosen, consensus, at_final.silhouette.to_dict())

    acc = truth.set_index(["seed", "epoch"]).acc
    y = ground_truth(base.attrs["dataset"], base.attrs["algorithm"])
    consensus_acc = {c: accuracy(y, labels, parts.n_clusters) for c, labels in consensus.items()}
    finals = np.array([acc[(s, final)] for s in parts.seeds])

    def of(choice):
        return consensus_acc[choice["candidate"]] if choice["seed"] == -1 else acc[(choice["seed"], choice["epoch"])]

    row = {"launch": name, "dataset": base.attrs["dataset"], "algorithm": base.attrs["algorithm"],
           "batch": f"{base.attrs['dataset']}_s{min(parts.seeds)}", "seeds": len(parts.seeds),
           "random_final": finals.mean(), "median_final": float(np.median(finals)),
           "oracle": float(truth.acc.max()),
           "min_final_loss": acc[(int(at_final.loss_total.idxmin()), final)],
           "max_final_silhouette": acc[(int(at_final.silhouette.idxmax()), final)],
           "per_seed_primary": float(np.mean([acc[(s, e)] for s, e in chosen.items()])),
           "per_seed_primary_collapse": float(np.mean([acc[(s, e)] for s, e in zip(collapse.seed, collapse.epoch)]))}
    for selector, pick in launch.LAUNCH_SELECTORS.items():
        choice = pick(table)
        row[selector] = of(choice)
        row[f"{selector}_choice"] = choice["candidate"]
    picks = pd.concat([per_seed.assign(selector="primary"), collapse.assign(selector="primary_collapse")])
    picks = picks.assign(run=base.attrs["run"])[["run", "selector", "seed", "epoch"]]
    return row, selection.outcomes(picks, truth.assign(run=base.attrs["run"])).assign(
        dataset=base.attrs["dataset"], algorithm=base.attrs["algorithm"])


# ------------------------------------------------------------ the report

BASELINES = ["random_final", "min_final_loss", "max_final_silhouette", "per_seed_primary"]
CHOICES = [*BASELINES, "per_seed_primary_collapse", *launch.LAUNCH_SELECTORS]


def pts(x) -> str:
    return "–" if pd.isna(x) else f"{100 * x:+.2f}" if x < 0 else f"{100 * x:.2f}"


def bootstrap(launches: pd.DataFrame, columns: list[str]) -> dict:
    """Resampled means of each column, resampling (data set, seed batch) groups."""
    groups = list(launches.groupby("batch").indices.values())
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = {c: [] for c in columns}
    for _ in range(BOOTSTRAP_RESAMPLES):
        rows = np.concatenate([groups[i] for i in rng.integers(len(groups), size=len(groups))])
        for c in columns:
            draws[c].append(float(launches[c].iloc[rows].mean()))
    return {c: np.asarray(v) for c, v in draws.items()}


def target_rows(launches: pd.DataFrame) -> list[dict]:
    measures = {}
    for c in CHOICES:
        measures[f"{c}|gain"] = launches[c] - launches.random_final
        measures[f"{c}|regret"] = launches.oracle - launches[c]
        measures[f"{c}|worse"] = (launches[c] < launches.median_final - 1e-9).astype(float)
    frame = pd.DataFrame(measures).assign(batch=launches.batch.to_numpy())
    draws = bootstrap(frame, list(measures))
    rows = []
    for c in CHOICES:
        cells = {"selector": c}
        for m, target, fmt in (("gain", f"≥ +{100 * GAIN_TARGET:.1f}", pts), ("regret", f"≤ {100 * REGRET_TARGET:.1f}", pts),
                               ("worse", f"≤ {100 * WORSE_TARGET:.0f}%", lambda v: f"{100 * v:.0f}%")):
            v, (lo, hi) = frame[f"{c}|{m}"].mean(), np.percentile(draws[f"{c}|{m}"], [2.5, 97.5])
            met = {"gain": v >= GAIN_TARGET, "regret": v <= REGRET_TARGET, "worse": v <= WORSE_TARGET}[m]
            cells[f"{m} ({target})"] = f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]{' ✓' if met else ''}"
        rows.append(cells)
    return rows


def test_rows(launches: pd.DataFrame) -> list[dict]:
    """One-sided: the selector's ACC > the baseline's, paired by launch."""
    rows = []
    for c in CHOICES:
        if c == "random_final":
            continue
        cells = {"selector": c}
        for b in BASELINES:
            if b == c:
                cells[b] = "–"
                continue
            d = (launches[c] - launches[b]).to_numpy()
            draws = bootstrap(pd.DataFrame({"d": d, "batch": launches.batch.to_numpy()}), ["d"])["d"]
            p_boot = float(np.mean(draws <= 0))
            p_wil = stats.wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue if np.any(d != 0) else np.nan
            cells[b] = f"{pts(d.mean())}: p {p_boot:.3f} / {p_wil:.3f}"
        rows.append(cells)
    return rows


def per_group_rows(launches: pd.DataFrame) -> list[dict]:
    rows = []
    key = launches.algorithm.map({a: i for i, a in enumerate(ORDER)})
    for (ds, alg), g in launches.assign(_o=key).sort_values(["dataset", "_o"]).groupby(["dataset", "algorithm"],
                                                                                       sort=False):
        rows.append({"data set": ds, "algorithm": alg, "launches": len(g),
                     **{c: pts(g[c].mean()) for c in ["median_final", *CHOICES, "oracle"]}})
    return rows


def per_seed_rows(outcomes: pd.DataFrame) -> list[dict]:
    rows = []
    for name, g in outcomes.groupby("selector", sort=False):
        rows.append({"per-seed selector": name, "pairs": len(g), "gain vs final": pts(g.gain_vs_final.mean()),
                     "mean regret (≤ 1.0)": pts(g.regret.mean()), "p90 regret (≤ 3.0)": pts(g.regret.quantile(0.9)),
                     "do-no-harm (≥ 95%)": f"{100 * g.do_no_harm.mean():.0f}%",
                     "DKM gain vs final": pts(g[g.algorithm == "dkm"].gain_vs_final.mean())})
    return rows


def report(launches: pd.DataFrame, outcomes: pd.DataFrame, command: str, seconds: float) -> list[str]:
    n_batches = launches.batch.nunique()
    return [
        SECTION, "",
        f"Command: `{command}` ({seconds:.0f} s; it reads only the committed `scores_launch/` and `partitions/` files). "
        f"{len(launches)} launches of 5 seeds ({n_batches} batches of seeds: "
        + ", ".join(sorted(launches.batch.unique())) + "), all trained after the collapse rule and the first launch "
        "selectors were written (`own_silhouette` was added after the first batch was scored; the notes below "
        "say which default was fixed when). ACC in points. Per launch the candidates are every seed × epoch of the "
        "selection phase and two consensus partitions (`dcjax.launch`). Per-seed choices: the committed primary "
        f"assessor (`{ASSESSOR.name}`, `{PER_SEED}`), as `python -m dcjax.select` makes them. `random_final`: "
        "the mean over the launch's seeds of the final epoch's ACC (what a user gets today, in expectation); "
        "`per_seed_primary`: the per-seed primary applied to a random seed (mean over seeds); `oracle`: the best "
        "ACC over all seeds × epochs.", "",
        "### Per data set × algorithm (mean over launches)", "",
        *markdown(pd.DataFrame(per_group_rows(launches))), "",
        "### Targets, over all launches", "",
        "Mean over launches [95% cluster-bootstrap interval, resampling the seed batches]; ✓ where the target is "
        "met. gain: over the random-seed final; regret: to the launch oracle; worse: share of launches where the "
        "choice is below the launch's median seed-final.", "",
        *markdown(pd.DataFrame(target_rows(launches))), "",
        "### One-sided tests against each baseline, paired by launch", "",
        "Mean difference in ACC points, then p of the cluster bootstrap (share of resamples whose mean difference "
        f"is ≤ 0; {BOOTSTRAP_RESAMPLES} resamples of the {n_batches} seed batches) / p of Wilcoxon's signed-rank "
        "test (zero differences split).", "",
        *markdown(pd.DataFrame(test_rows(launches))), "",
        "### The per-seed selectors on these seeds (out of sample)", "",
        "The committed primary (trained on the 230 earlier pairs; none of these seeds) and the primary with the "
        "collapse rule (`selection.collapse_guard`, pre-registered before these seeds were scored).", "",
        *markdown(pd.DataFrame(per_seed_rows(outcomes))), ""]


def write_section(lines: list[str]):
    """Replace this section of selection.md, or append it at the end: after
    the hand-written notes, which selection_study.py keeps (from the notes'
    heading to the end) when it rewrites the rest."""
    path = RESULTS / "selection.md"
    text = path.read_text()
    new = "\n".join(lines) + "\n"
    if SECTION in text:
        start = text.index(SECTION)
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + new + ("" if end == -1 else text[end:])
    else:
        text = text.rstrip("\n") + "\n\n" + new
    path.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", nargs="*", type=Path, default=[], help="run workdirs to export first")
    ap.add_argument("--export-only", action="store_true", help="export, no analysis")
    args = ap.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    for workdir in args.export:
        export(workdir)
    if args.export_only:
        return
    assessor = selection.load_assessor(ASSESSOR)
    names = sorted(p.stem for p in PARTITIONS.glob("*.npz"))
    rows, outcomes = [], []
    for name in names:
        row, out = study_launch(name, assessor)
        rows.append(row)
        outcomes.append(out)
        print(f"{name}: " + ", ".join(f"{c} {100 * row[c]:.1f}" for c in ["random_final", *launch.LAUNCH_SELECTORS,
                                                                         "oracle"]), flush=True)
    launches = pd.DataFrame(rows)
    launches.to_csv(RESULTS / "launch_outcomes.csv", index=False, float_format="%.5g")
    outcomes = pd.concat(outcomes, ignore_index=True)
    lines = report(launches, outcomes, "python experiments/launch_study.py", time.perf_counter() - t0)
    write_section(lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
