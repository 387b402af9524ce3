"""Does label-free epoch selection beat the final epoch? Runs every selector
of `dcjax.selection` on finished runs (data set x algorithm) and scores the
choices with the labels.

    python experiments/selection_study.py --name digits_preliminary \
        runs/protocol/digits/{ae_kmeans,dec,idec,dcn,dkm}
    python experiments/selection_study.py --name digits_preliminary --from-csv   # re-analyse, no runs needed

Steps:
1. Each run is scored (`evaluate_run`, cached in its scores.csv). Its
   label-free base table (`selection.base_table`) and its ACC/NMI/ARI per
   seed x epoch are written to experiments/results/scores/<dataset>_<algorithm>.csv,
   with 5 significant digits. The analysis below reads only these files,
   so a re-run with --from-csv gives the same tables without the runs.
2. Features, then every fixed selector per run. The learned assessor is
   cross-fitted: leave-one-algorithm-out (LOAO) always, and
   leave-one-dataset-out (LODO) once there are two data sets or more.
   Both a gradient-boosting and a ridge assessor are fitted, with the
   settings fixed in selection.py. Neither was tuned on these results.
3. The labels score the choices: selected vs final vs oracle-best epoch,
   regret, win rate, do-no-harm rate, and Wilcoxon tests paired by
   (run, seed). Within a run, the Spearman correlation of each score with ACC.
   The tables go to experiments/results/selection_<name>.md. An assessor
   trained on ALL the runs goes to experiments/results/assessor_<name>.joblib,
   for `python -m dcjax.select` on new runs. On these same runs it is in-sample.

A section '## Notes (hand-written)' already in the .md is kept when the
tables are rewritten.
"""
import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from dcjax import selection

RESULTS = Path(__file__).parent / "results"
SCORES = RESULTS / "scores"
INFO = ["run", "dataset", "algorithm", "phase"]
NOTES = "## Notes (hand-written)"
ORDER = {name: i for i, name in enumerate(("ae_kmeans", "dec", "idec", "dcn", "dkm"))}   # table column order
# Selectors reported, in order; the assessors are added by cross-fitting.
ASSESSORS = {"assessor_gbr_loao": ("algorithm", "gbr"), "assessor_ridge_loao": ("algorithm", "ridge"),
             "assessor_gbr_lodo": ("dataset", "gbr"), "assessor_ridge_lodo": ("dataset", "ridge")}
SPEARMAN_COLUMNS = ["loss_total", "silhouette", "calinski_harabasz", "davies_bouldin", "simplified_silhouette",
                    *selection.POOLED, "ari_vs_previous_smooth", "mean_pairwise_ari", "size_entropy",
                    "mean_max_prob", "effective_rank", "epoch_fraction"]


# ------------------------------------------------------------ 1. per-run tables

def write_run_csv(workdir: Path) -> Path:
    """Score the run (cached) and write its base table + labels, rounded, to SCORES."""
    t0 = time.perf_counter()
    scores = selection.scores_table(workdir, labels=True)
    base = selection.base_table(workdir, scores=scores)
    info = base.attrs
    truth = scores[scores.phase == info["phase"]][selection.ID + selection.LABEL_BASED]
    table = base.merge(truth, on=selection.ID, how="left")
    for key in INFO:
        table.insert(INFO.index(key), key, info[key])
    SCORES.mkdir(parents=True, exist_ok=True)
    path = SCORES / f"{info['dataset']}_{info['algorithm']}.csv"
    table.to_csv(path, index=False, float_format="%.5g")
    print(f"{workdir}: {len(table)} rows -> {path} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return path


def read_run_csv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(label-free base table with the run's info in attrs, truth table)."""
    table = pd.read_csv(path)
    info = {key: table[key].iloc[0] for key in INFO}
    base = table.drop(columns=INFO + selection.LABEL_BASED)
    base.attrs.update(info)
    truth = table[selection.ID + selection.LABEL_BASED].assign(run=info["run"])
    return base, truth


# ------------------------------------------------------------ 2-3. selections and their scores

def run_selectors(runs: list[tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """All selections: run, selector, seed, epoch, why."""
    picks = []
    for feats, _ in runs:
        for name in selection.SELECTORS:
            picks.append(selection.select(feats, name).assign(run=feats.attrs["run"], selector=name))
    for name, (group, kind) in ASSESSORS.items():
        for run, chosen in selection.cross_fit(runs, group, kind).items():
            picks.append(chosen.assign(run=run, selector=name))
    return pd.concat(picks, ignore_index=True)


def pts(x) -> str:
    return "–" if pd.isna(x) else f"{100 * x:+.2f}" if x < 0 else f"{100 * x:.2f}"


def pct(x) -> str:
    return "–" if pd.isna(x) else f"{100 * x:.0f}%"


def pval(p) -> str:
    return "–" if pd.isna(p) else f"{p:.3f}"


def markdown(df: pd.DataFrame) -> list[str]:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    return [head, "| " + " | ".join("---" for _ in df.columns) + " |"] + [
        "| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]


def report(name: str, runs, picks: pd.DataFrame, command: str, seconds: float) -> str:
    truth = pd.concat([t for _, t in runs], ignore_index=True)
    info = pd.DataFrame([f.attrs for f, _ in runs])[INFO]
    out = selection.outcomes(picks, truth).merge(info, on="run")
    datasets = sorted(info.dataset.unique())
    selectors = list(dict.fromkeys(picks.selector))
    lines = [f"# Label-free epoch selection: {name}", ""]
    if len(datasets) < 2:
        lines += [f"**PRELIMINARY.** One data set ({datasets[0]}): the learned assessor is evaluated "
                  "leave-one-algorithm-out (trained on the other algorithms' runs of the same data set). "
                  "Leave-one-dataset-out needs a second data set and is absent here. "
                  f"{int(out.groupby('run').seed.nunique().sum())} (run, seed) pairs in all, so the tests have little power.", ""]
    lines += [f"Command: `{command}` ({seconds:.0f} s on 2 shared CPU cores; the per-epoch tables are in "
              "`experiments/results/scores/`, and `--from-csv` re-analyses them without the runs).", "",
              "Candidates: every epoch of the selection phase. For DEC, IDEC, DCN and DKM that is clustering "
              "epochs 0..150, where epoch 0 is the k-means initialisation. AE+k-means has no clustering epochs: "
              "its candidates are pretraining epochs 1..100, each k-means'd by `dcjax.evaluate` (JAX k-means, "
              "10 starts), so its 'final' ACC differs a little from protocol_digits.md (scikit-learn's k-means). "
              "ACC/NMI/ARI are in points (%). Regret = oracle ACC − selected ACC. Win = selected ACC > final. "
              f"Do-no-harm = selected ≥ final − {100 * selection.DO_NO_HARM:.1f} points.", ""]

    # oracle vs final
    ovf = selection.oracle_vs_final(truth).merge(info, on="run")
    lines += ["## How far the final epoch is from the best one (oracle, labels)", ""]
    rows = [{"dataset": r.dataset, "algorithm": r.algorithm, "seeds": r.seeds,
             "oracle ≠ final": pct(r.differs), "oracle beats final by > 0.5": pct(r.differs_by_half_point),
             "mean gain (pts)": pts(r.mean_gain), "max gain (pts)": pts(r.max_gain),
             "final − oracle epoch (mean)": f"{r.mean_epochs_apart:.0f}",
             "oracle epochs": " ".join(map(str, r.oracle_epochs))} for r in ovf.itertuples()]
    lines += markdown(pd.DataFrame(rows)) + [""]

    # aggregate
    agg = selection.summarize(out, ["selector"]).set_index("selector").loc[selectors]
    tests = {b: selection.wilcoxon_vs(out, b).set_index("selector") for b in ("last", "min_loss")}
    lines += ["## All runs: mean over (run, seed)", "",
              "p: one-sided Wilcoxon signed-rank (selected ACC > baseline ACC), paired by (run, seed), zero "
              "differences split.", ""]
    rows = []
    for sel, r in agg.iterrows():
        rows.append({"selector": sel, "ACC": pts(r.acc_selected), "NMI": pts(r.nmi_selected),
                     "ARI": pts(r.ari_selected), "Δ ACC vs final": pts(r.gain_vs_final), "regret": pts(r.regret),
                     "win": pct(r.win), "do-no-harm": pct(r.do_no_harm),
                     "p vs last": pval(tests["last"].p_greater.get(sel)),
                     "p vs min_loss": pval(tests["min_loss"].p_greater.get(sel))})
    lines += markdown(pd.DataFrame(rows))
    final_row = agg.iloc[0]
    lines += ["", f"Final epoch: ACC {pts(final_row.acc_final)}; oracle-best epoch: ACC {pts(final_row.acc_oracle)} "
                  f"(NMI {pts(final_row.nmi_oracle)}, ARI {pts(final_row.ari_oracle)}): the ceiling of any selector.", ""]

    # per algorithm x dataset
    per = selection.summarize(out, ["dataset", "algorithm", "selector"])
    lines += ["## Per data set × algorithm: Δ ACC vs final / regret (points), do-no-harm", ""]
    groups = list(dict.fromkeys(zip(per.dataset, per.algorithm)))
    rows = []
    for sel in selectors:
        row = {"selector": sel}
        for ds, alg in groups:
            r = per[(per.dataset == ds) & (per.algorithm == alg) & (per.selector == sel)]
            row[f"{alg} ({ds})"] = ("–" if r.empty else
                                    f"{pts(r.gain_vs_final.iloc[0])} / {pts(r.regret.iloc[0])}, {pct(r.do_no_harm.iloc[0])}")
        rows.append(row)
    lines += markdown(pd.DataFrame(rows))
    base_rows = [{"": "final ACC"} | {f"{alg} ({ds})": pts(per[(per.dataset == ds) & (per.algorithm == alg)].acc_final.iloc[0])
                                      for ds, alg in groups},
                 {"": "oracle ACC"} | {f"{alg} ({ds})": pts(per[(per.dataset == ds) & (per.algorithm == alg)].acc_oracle.iloc[0])
                                       for ds, alg in groups}]
    lines += [""] + markdown(pd.DataFrame(base_rows)) + [""]

    # the assessor against every other selector
    lines += ["## The assessor (GBR, LOAO) against each other selector", "",
              "One-sided Wilcoxon (assessor ACC > selector ACC), paired by (run, seed).", ""]
    rows = []
    for other in selectors:
        if other == "assessor_gbr_loao" or "assessor_gbr_loao" not in selectors:
            continue
        t = selection.wilcoxon_vs(out[out.selector.isin(["assessor_gbr_loao", other])], other)
        t = t[t.selector == "assessor_gbr_loao"].iloc[0]
        rows.append({"baseline": other, "mean Δ ACC (pts)": pts(t.mean_diff), "better": t.better,
                     "worse": t.worse, "p": pval(t.p_greater)})
    lines += markdown(pd.DataFrame(rows)) + [""]

    # Spearman
    lines += ["## Within-run Spearman correlation of each label-free score with ACC", "",
              "Across the epochs of one seed, averaged over seeds. For scores where lower is better (loss, "
              "Davies-Bouldin) a good score correlates negatively.", ""]
    rho = {f"{f.attrs['algorithm']} ({f.attrs['dataset']})":
           selection.score_acc_spearman(f, t, SPEARMAN_COLUMNS) for f, t in runs}
    rho = pd.DataFrame(rho).reindex(SPEARMAN_COLUMNS)
    rho["mean"] = rho.mean(axis=1)
    lines += markdown(rho.map(lambda v: "–" if pd.isna(v) else f"{v:+.2f}").reset_index(names="score")) + [""]

    # example whys
    lines += ["## Example: why each selector chose (first seed of the first run)", ""]
    first = picks[(picks.run == picks.run.iloc[0]) & (picks.seed == picks.seed.min())]
    lines += [f"- `{r.selector}` → epoch {r.epoch}: {r.why}" for r in first.itertuples()] + [""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path, help="run workdirs (data set x algorithm)")
    ap.add_argument("--name", required=True, help="report: experiments/results/selection_<name>.md")
    ap.add_argument("--from-csv", action="store_true",
                    help="analyse every table already in experiments/results/scores/; no run is read")
    args = ap.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    if args.from_csv:
        paths = sorted(SCORES.glob("*.csv"))
    else:
        paths = [write_run_csv(w) for w in args.runs]
    runs = []
    for path in paths:
        base, truth = read_run_csv(path)
        runs.append((selection.features(base), truth))
    runs.sort(key=lambda r: (r[0].attrs["dataset"], ORDER.get(r[0].attrs["algorithm"], len(ORDER)), r[0].attrs["algorithm"]))
    picks = run_selectors(runs)
    command = "python experiments/selection_study.py " + " ".join(sys.argv[1:])
    md = report(args.name, runs, picks, command, time.perf_counter() - t0)
    path = RESULTS / f"selection_{args.name}.md"
    if path.exists() and NOTES in path.read_text():
        md += "\n" + path.read_text()[path.read_text().index(NOTES):]
    path.write_text(md)
    final = selection.train_assessor(runs, "gbr")
    saved = selection.save_assessor(final, RESULTS / f"assessor_{args.name}.joblib")
    print(md)
    print(f"wrote {path} and {saved} ({saved.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
