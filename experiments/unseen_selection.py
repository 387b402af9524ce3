"""Label-free epoch selection on UNSEEN runs, an algorithm no assessor was trained on.

    python experiments/unseen_selection.py --csv        # score the finished UNSEEN runs (per-epoch tables)
    python experiments/unseen_selection.py              # the report, from experiments/results/scores/

1. `--csv`: every finished UNSEEN run of experiments/unseen_reproduce.py
   (the paper's three variants, the run folders its JSON files name) gets
   its per-epoch table in experiments/results/scores/<dataset>_unseen_<alg>[_s<first>].csv,
   exactly as experiments/selection_study.py writes them (its `write_run_csv`).
   The number of active clusters is a column there (and a feature).
2. The report reads those tables only. It gives, per run, how far the final
   epoch is from the best one (labels), and what the selectors choose: the
   fixed ones of `dcjax.selection`, and the study's assessor
   (experiments/results/archive/assessor_selection_75runs.joblib, what
   `python -m dcjax.select` used until issue 35's round 2), trained on the
   base algorithms' runs only: UNSEEN is an algorithm it never saw. ACC is that of each epoch's own assignment
   (nearest active center), so it moves as clusters die.
   The tables go to experiments/results/selection_unseen.md, and a summary
   to the notes of experiments/results/selection.md.
3. The product's default (`selection.resolve_default`): on an algorithm the
   shipped assessor never learned from it keeps the final epoch. That rule
   was fixed (commit daae1d3) after the seeds 0-4 runs were scored and
   before any seeds 5-9 run was: the report compares it with the guarded
   assessor on each batch apart, so the later batch is its out-of-sample
   test. The same comparison on the DECCS runs (rounds as epochs, the
   tables of experiments/results/scores_launch/*_deccs.csv).

experiments/selection_study.py leaves these tables out of its own study
(their file names hold '_unseen_'), so its numbers do not change.
"""
import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from dcjax import selection, study
from protocol import write_report
from selection_study import NOTES, PRIMARY, RESULTS, SCORES, markdown, pts, read_run_csv, write_run_csv
from unseen_reproduce import OUT, PAPER

ASSESSOR = RESULTS / "archive" / "assessor_selection_75runs.joblib"   # the model that never saw UNSEEN (launch_study.py)
BEGIN, END = "<!-- unseen selection: begin (experiments/unseen_selection.py) -->", "<!-- unseen selection: end -->"


def finished_runs() -> list[Path]:
    runs = []
    for path in sorted(OUT.glob("*.json")):
        for variant, summary in json.loads(path.read_text()).items():
            if variant in PAPER and not path.stem.startswith("blobs"):
                runs.append(Path(summary["run"]))
    return runs


def score_paths() -> list[Path]:
    return sorted(SCORES.glob("*_unseen_*.csv"))


def selections(runs, assessor) -> pd.DataFrame:
    picks = []
    for feats, _ in runs:
        names = selection.available_selectors(feats) + ["assessor", "assessor_guarded"]
        for name in names:
            picks.append(selection.select(feats, name, assessor).assign(run=feats.attrs["run"], selector=name))
    return pd.concat(picks, ignore_index=True)


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """A `study.summarize` table for print: ACC in %, regret and gain in points, rates in %."""
    table = table.copy()
    for c in ("acc_selected", "acc_final", "acc_oracle"):
        table[c] = table[c].map(lambda v: f"{100 * v:.2f}")
    for c in ("regret", "gain_vs_final"):
        table[c] = table[c].map(pts)
    for c in [c for c in ("win", "do_no_harm") if c in table]:
        table[c] = table[c].map(lambda v: f"{100 * v:.0f}%")
    return table


def batch_of(run: str) -> str:
    """'seeds 0-4' or 'seeds 5-9': the chunk folder a run trained in (<data set>_s<first seed>)."""
    first = int(Path(run).parent.name.rsplit("_s", 1)[1])
    return f"seeds {first}-{first + 4}"


def default_rule_tables(out: pd.DataFrame) -> list[str]:
    """The default (final epoch) against the guarded assessor, per batch of
    seeds: mean ACC of each, the paired difference, and on how many seeds the
    assessor chose worse or better than the final epoch."""
    rows = []
    groups = [(name, g) for name, g in out.groupby("batch")] + [("all", out)]
    for name, g in groups:
        guarded = g[g.selector == "assessor_guarded"].set_index(["run", "seed"])
        last = g[g.selector == "last"].set_index(["run", "seed"]).loc[guarded.index]
        diff = 100 * (guarded.acc_selected - last.acc_selected)
        rows.append({"seeds": name, "n": len(diff), "default (final epoch)": f"{100 * last.acc_selected.mean():.2f}",
                     "assessor_guarded": f"{100 * guarded.acc_selected.mean():.2f}",
                     "assessor − default (pts)": pts(diff.mean() / 100),
                     "assessor worse / better (> 0.5 pts)": f"{int((diff < -0.5).sum())} / {int((diff > 0.5).sum())}"})
    return markdown(pd.DataFrame(rows))


def deccs_tables(assessor) -> list[str]:
    """Per-seed selection on the DECCS runs: the selectors against the final round."""
    runs = [read_run_csv(path) for path in sorted((RESULTS / "scores_launch").glob("*_deccs.csv"))]
    if not runs:
        return ["No DECCS score tables (experiments/results/scores_launch/*_deccs.csv)."]
    runs = [(selection.features(base), truth) for base, truth in runs]
    picks = pd.concat([selection.select(f, name, assessor).assign(run=f.attrs["run"], selector=name)
                       for f, _ in runs for name in ("last", "assessor", "assessor_guarded")], ignore_index=True)
    out = study.outcomes(picks, pd.concat([t for _, t in runs], ignore_index=True))
    info = pd.DataFrame([f.attrs for f, _ in runs])[["run", "dataset"]]
    table = study.summarize(out.merge(info, on="run"), ["dataset", "selector"])
    table = pd.concat([table, study.summarize(out, ["selector"]).assign(dataset="all")], ignore_index=True)
    table = table[["dataset", "selector", "n", "acc_selected", "acc_final", "acc_oracle", "regret",
                   "gain_vs_final", "do_no_harm"]].copy()
    return markdown(formatted(table))


def report():
    runs = []
    for path in score_paths():
        base, truth = read_run_csv(path)
        runs.append((selection.features(base), truth))
    if not runs:
        print("no UNSEEN score tables yet: run with --csv first")
        return
    assessor = selection.load_assessor(ASSESSOR)
    truth = pd.concat([t for _, t in runs], ignore_index=True)
    info = pd.DataFrame([f.attrs for f, _ in runs])[["run", "dataset", "algorithm"]]
    gaps = info.merge(study.oracle_vs_final(truth), on="run")
    out = study.outcomes(selections(runs, assessor), truth).merge(info, on="run")
    out["batch"] = out.run.map(batch_of)
    by_selector = study.summarize(out, ["selector"]).sort_values("regret")
    primary = study.summarize(out[out.selector == "assessor_guarded"], ["dataset", "algorithm"])
    alive = pd.concat([f[["seed", "epoch", "n_active_clusters"]].assign(run=f.attrs["run"]) for f, _ in runs])
    final_k = alive[alive.epoch == alive.groupby(["run", "seed"]).epoch.transform("max")].groupby("run") \
        .n_active_clusters.mean().rename("final clusters (mean)")
    gaps = gaps.merge(final_k, on="run")
    gap_table = gaps[["dataset", "algorithm", "run", "seeds", "final clusters (mean)", "differs",
                      "differs_by_half_point", "mean_gain", "max_gain", "mean_epochs_apart", "oracle_epochs",
                      "lag1_autocorr"]].copy()
    for c in ("differs", "differs_by_half_point"):
        gap_table[c] = gap_table[c].map(lambda v: f"{100 * v:.0f}%")
    for c in ("mean_gain", "max_gain"):
        gap_table[c] = gap_table[c].map(pts)
    gap_table["lag1_autocorr"] = gap_table["lag1_autocorr"].map(lambda v: f"{v:+.2f}")
    gap_table["mean_epochs_apart"] = gap_table["mean_epochs_apart"].map(lambda v: f"{v:.0f}")
    gap_lines = markdown(gap_table.rename(columns={
        "differs": "oracle ≠ final", "differs_by_half_point": "oracle beats final by > 0.5",
        "mean_gain": "mean gain (pts)", "max_gain": "max gain (pts)",
        "mean_epochs_apart": "final − oracle epoch (mean)", "oracle_epochs": "oracle epochs",
        "lag1_autocorr": "ACC lag-1 autocorrelation"}))
    selector_table = by_selector[["selector", "n", "acc_selected", "acc_final", "acc_oracle", "regret",
                                  "gain_vs_final", "win", "do_no_harm"]].copy()
    primary_table = primary[["dataset", "algorithm", "n", "acc_selected", "acc_final", "acc_oracle", "regret",
                             "gain_vs_final", "do_no_harm"]].copy()
    selector_table, primary_table = formatted(selector_table), formatted(primary_table)
    assessor_text = (f"`assessor_guarded` is the study's primary selector ({PRIMARY}'s model, trained on all "
                     f"{len(assessor['trained_on'])} base-algorithm runs of selection.md, no UNSEEN run) with its "
                     "margin guard; `assessor` is the same without the guard.")
    lines = ["# Label-free epoch selection on UNSEEN runs", "",
             "Command: `python experiments/unseen_selection.py` (reads "
             "`experiments/results/scores/*_unseen_*.csv`; `--csv` writes them from the runs).", "",
             "Candidates: clustering epochs 0..150 of UNSEEN+DCN/DEC/DKM (epoch 0: k-means with k_init = 35). "
             "ACC/NMI/ARI of an epoch score its own assignment (nearest active center), in points. "
             + assessor_text, "",
             "## How far the final epoch is from the best one (oracle, labels)", "", *gap_lines, "",
             "## Every selector, all UNSEEN runs (mean over run × seed)", "", *markdown(selector_table), "",
             "## The guarded assessor per data set × variant", "", *markdown(primary_table), "",
             "## The product's default on them: the final epoch (pre-registered)", "",
             "`python -m dcjax.select` keeps the final epoch on an algorithm the shipped assessor never learned "
             "from (`selection.resolve_default`, commit daae1d3). The rule was fixed on the seeds 0-4 runs (in "
             "sample) and before any seeds 5-9 run was scored (out of sample). ACC of the method's own assignment; "
             "a positive difference would favour the assessor.", "",
             *default_rule_tables(out), "",
             "## DECCS runs (rounds as epochs), the same question", "",
             "Per data set, 5 seeds each (experiments/results/deccs.md). The default keeps the final round here "
             "too.", "", *deccs_tables(assessor), ""]
    write_report(RESULTS / "selection_unseen.md", lines)
    summary = [BEGIN, "### UNSEEN runs, scored as an algorithm the assessor never trained on", "",
               f"From `experiments/results/selection_unseen.md` ({len(runs)} runs, "
               f"{int(gaps.seeds.sum())} run × seed pairs; command there). Best (oracle) vs final epoch, "
               "ACC of the method's own assignment:", "",
               *markdown(gap_table[["dataset", "algorithm", "seeds", "differs", "mean_gain", "max_gain"]].rename(
                   columns={"differs": "oracle ≠ final", "mean_gain": "mean gain (pts)",
                            "max_gain": "max gain (pts)"})), "",
               "Selectors on them (mean over run × seed):", "",
               *markdown(selector_table[selector_table.selector.isin(
                   ["last", "assessor", "assessor_guarded", "pooled_silhouette", "max_agreement_guarded",
                    "min_loss"])]), "",
               "The product's default on these runs (the final epoch; fixed before seeds 5-9 were scored) "
               "against the guarded assessor, per batch of seeds:", "", *default_rule_tables(out), "", END]
    path = RESULTS / "selection.md"
    text = path.read_text()
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + "\n".join(summary) + text[text.index(END) + len(END):]
    else:
        if NOTES not in text:
            text += f"\n{NOTES}\n"
        text = text.rstrip("\n") + "\n\n" + "\n".join(summary) + "\n"
    path.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", action="store_true", help="write the per-epoch tables of finished runs first")
    args = ap.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    if args.csv:
        done = {p.name for p in score_paths()}
        for workdir in finished_runs():
            config = json.loads((workdir / "config.json").read_text())
            name = f"{config['dataset']['name']}_{workdir.name}" + (f"_s{config['seed']}" if config["seed"] else "")
            if f"{name}.csv" not in done:   # a table is written once, when its run has finished
                write_run_csv(workdir)
    report()


if __name__ == "__main__":
    main()
