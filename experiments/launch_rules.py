"""Issue 35, rounds 2 and 3: launch rules that do not assume even clusters,
chosen on every launch scored so far and tested on launches trained after
the choice.

    python experiments/launch_rules.py rows --split seen    # per-seed rows of the scored launches (~4 min)
    python experiments/launch_rules.py tune                 # the rules on them; the learned ones leave-one-family-out
    python experiments/launch_rules.py rows --split round2  # after the pre-registration commit
    python experiments/launch_rules.py test                 # the round-2 launches, once
    python experiments/launch_rules.py section --notes F    # selection.md's section
    python experiments/launch_rules.py rows --split round3  # round 3, after its pre-registration commit
    python experiments/launch_rules.py test --split round3  # the round-3 launches, once
    python experiments/launch_rules.py section --split round3 --notes F
    python experiments/launch_rules.py rows --split round4   # round 4: UNSEEN and DECCS on the image subsamples
    python experiments/launch_rules.py test --split round4
    python experiments/launch_rules.py rows --split epochs150  # round 4, 6.: 150 clustering epochs
    python experiments/launch_rules.py test --split epochs150
    python experiments/launch_rules.py section --split round4 --notes F

Round 1 (experiments/uneven_study.py, pre-registered in 0cb0afb) found no
rule that meets the issue's targets on uneven data, and kept `even_sizes`,
which takes the most balanced wrong seed on a launch whose large cluster
the seeds split. Its launches, and the 39 balanced ones, are now seen data:
they choose round 2's rule. Round 2's test launches are uneven subsamples
that no rule had been scored on when round 2 was registered
(experiments/results/uneven_round2_preregistration.md); it rejected the
consensus. Round 3 (uneven_round3_preregistration.md) took every launch
scored by then as seen data, registered `launch_silhouette` for data of
unknown cluster sizes, and tested it on 38 fresh launches: it became the
default for `cluster_sizes="unknown"` (dcjax/launch.py).

One row per seed of a launch (its per-seed selected epoch, as every launch
rule starts from) and one per consensus partition, with the label-free
columns of `launch.launch_table` plus `size_gap`: the L1 distance between
the seed's sorted cluster-size fractions and the consensus's. The
consensus of several seeds keeps what they share; a seed that splits a
large cluster the others keep, or merges two the others keep apart, has
a size profile unlike it, whether the clusters are even or not. ACC (for
scoring only) at the selected epoch and at the final one. Written to
experiments/results/uneven/seed_rows_<split>.csv (committed).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import launch_study  # noqa: E402
import uneven_study  # noqa: E402
from selection_study import markdown  # noqa: E402

from dcjax import launch, selection  # noqa: E402

OUT = uneven_study.OUT
# trained after round 1, scored only after uneven_round2_preregistration.md was committed
ROUND2 = ("usps_r10", "mnist_r10", "pendigits_r20", "usps_r20", "optdigits_r20", "pendigits_r5", "mnist_r20",
          "usps_r5")
# What round 2 scored: optdigits_r20 was left out at its deadline and trained
# later as a round-3 launch, so its tables now exist and must not enter round 2's.
ROUND2_SCORED = tuple(n for n in ROUND2 if n != "optdigits_r20")
# trained after round 2 was scored, scored only after uneven_round3_preregistration.md was committed
# (optdigits_r20 was registered for round 2 and left out at its deadline, unscored)
ROUND3 = ("optdigits_r20", "optdigits_r5", "fmnist_r10", "fmnist_r20", "fmnist_r5", "mnist_r5", "iris")
# trained after round 3 was scored, scored only after uneven_round4_preregistration.md was committed:
# UNSEEN and DECCS only (the fixed-k launches of these data sets were rounds 2 and 3's)
ROUND4 = ("fmnist_r10", "mnist_r5", "fmnist_r20", "usps_r10")
FIXED_K = ("ae_kmeans", "dec", "idec", "dcn", "dkm", "deccs")
# Per round: the rows that choose (seen), the rows that test, the registered
# candidate for `cluster_sizes="unknown"`, and the pre-registration commit.
ROUNDS = {
    "round2": {"seen": ("seed_rows_seen.csv",), "names": ROUND2_SCORED, "candidate": "consensus",
               "prereg": "c001602, amended before scoring in 762eaf4 (the deadline) and 4ddb54f (the wider "
                         "assessor's tables)", "file": "uneven_round2_preregistration.md"},
    "round3": {"seen": ("seed_rows_seen.csv", "seed_rows_round2.csv"), "names": ROUND3,
               "candidate": "launch_silhouette", "prereg": "84ad810",
               "file": "uneven_round3_preregistration.md"},
    "round4": {"names": ROUND4, "algorithms": ("deccs",), "prereg": "cf10d26",
               "file": "uneven_round4_preregistration.md"},
    # round 4's amendment 6.: round-3 launches retrained at the published 150 clustering epochs
    # round 4's amendment 2: DECCS where it never ran (reported)
    "deccs5": {"names": ("breast_cancer", "pendigits_r20", "pendigits_r10", "fmnist_r5", "pendigits_r5"),
               "algorithms": ("deccs",), "prereg": "bc0ddd5", "file": "uneven_round4_preregistration.md"},
    "epochs150": {"names": ("optdigits_r5", "fmnist_r10"), "algorithms": ("dec", "idec", "dcn", "dkm"),
                  "epochs": 150, "prereg": "e9c95d1", "file": "uneven_round4_preregistration.md"},
}


def round1_names() -> list[str]:
    """The uneven data sets round 1 scored: the grid less what rounds 2 and 3
    tested (optdigits_r5 and mnist_r5 are in the grid, trained only for round 3)."""
    return [n for n in uneven_study.GRID if n not in ROUND2 and n not in ROUND3]


def family(dataset: str) -> str:
    """The base data set: what leave-one-family-out holds out together."""
    return dataset.split("_r")[0]


def size_profile(labels: np.ndarray, k: int) -> np.ndarray:
    """Cluster-size fractions, largest first, length k."""
    return np.sort(np.bincount(labels.astype(np.int64), minlength=k)[:k] / len(labels))[::-1]


def seed_rows(name: str, dataset: str, kind: str, base, truth, parts, y, assessor) -> pd.DataFrame:
    """The launch's candidates as launch rules see them, with ACC beside."""
    _, _, consensus, table = uneven_study.launch_candidates(base, parts, assessor)
    final = max(parts.epochs)
    k = parts.n_clusters
    rows = table[table.selected | (table.kind == "consensus")].copy()
    labels = [launch.candidate_labels(parts, {"seed": s, "epoch": e, "candidate": c}, consensus)
              for s, e, c in zip(rows.seed, rows.epoch, rows.candidate)]
    reference = size_profile(consensus[launch.CONSENSUS_SELECTED], k)
    rows["size_gap"] = [float(np.abs(size_profile(lab, k) - reference).sum()) for lab in labels]
    acc = truth.set_index(["seed", "epoch"]).acc
    rows["acc"] = [acc[(s, e)] if s != -1 else launch_study.accuracy(y, lab, k)
                   for s, e, lab in zip(rows.seed, rows.epoch, labels)]
    rows["acc_final"] = [acc[(s, final)] if s != -1 else np.nan for s in rows.seed]
    sizes = np.bincount(y)
    return rows.assign(launch=name, dataset=dataset,
                       algorithm=base.attrs["algorithm"], data_kind=kind, class_ratio=sizes.max() / sizes.min(),
                       oracle=float(truth.acc.max()))


def balanced_launches():
    """The committed balanced fixed-k launches (launch_study.py's)."""
    for r in pd.read_csv(launch_study.RESULTS / "launch_outcomes.csv").to_dict("records"):
        parts = launch.load_partitions(launch_study.PARTITIONS / f"{r['launch']}.npz")
        if parts.fixed_k:
            base, truth = launch_study.read_run_csv(launch_study.score_table(r["launch"]))
            yield (r["launch"], r["dataset"], "balanced", base, truth, parts,
                   launch_study.ground_truth(r["dataset"], r["algorithm"]))


def uneven_launches(names, algorithms=FIXED_K):
    from dcjax import study
    for name in names:
        for algorithm in algorithms:
            stem = uneven_study.launch_name(name, algorithm)
            if (uneven_study.SCORES / f"{stem}.csv").exists() and (uneven_study.PARTITIONS / f"{stem}.npz").exists():
                base, truth = study.read_run_csv(uneven_study.SCORES / f"{stem}.csv")
                parts = launch.load_partitions(uneven_study.PARTITIONS / f"{stem}.npz")
                kind = "table" if name in uneven_study.TABLES else "uneven"
                yield stem, name, kind, base, truth, parts, uneven_study.labels_of(name)


def rows(split: str):
    t0 = time.perf_counter()
    assessor = selection.load_assessor(launch_study.ASSESSOR)
    if split == "seen":
        launches = [*balanced_launches(), *uneven_launches(round1_names())]
    else:
        uneven_study.set_clustering_epochs(ROUNDS[split].get("epochs", uneven_study.CLUSTERING_EPOCHS))
        launches = uneven_launches(ROUNDS[split]["names"], ROUNDS[split].get("algorithms", FIXED_K))
    frames = []
    for name, dataset, kind, base, truth, parts, y in launches:
        frames.append(seed_rows(name, dataset, kind, base, truth, parts, y, assessor))
        print(f"{name}: {len(frames[-1])} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    frame = pd.concat(frames, ignore_index=True)
    frame.to_csv(OUT / f"seed_rows_{split}.csv", index=False, float_format="%.6g")
    return frame


# ------------------------------------------------------------ the rules (no labels)

# The label-free columns the learned rule reads (z-scored within the launch),
# and the launch's context (as is).
FEATURES = ["cross_seed_nmi", "coassoc_divergence", "launch_silhouette", "final_silhouette", "size_entropy",
            "final_size_entropy", "size_gap"]
CONTEXT = ["median_final_size_entropy", "consensus_size_entropy"]
RULES = ["even_sizes", "consensus", "consensus_final", "agreement", "discotec", "own_silhouette",
         "launch_silhouette", "even_or_consensus", "even_or_discotec"]
LEARNED = ("learned_ridge", "learned_gbr")
MODEL_SEED = 0


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Within-launch z-scores of the label-free columns on the seed rows (0
    where constant), the launch's context, and the learned rule's target:
    a seed's ACC minus its launch's mean."""
    frame = frame.copy()
    seeds = frame[frame.kind == "epoch"]
    g = seeds.groupby("launch")[FEATURES]
    z = ((seeds[FEATURES] - g.transform("mean")) / g.transform("std")).fillna(0.0)
    for c in FEATURES:
        frame[f"z_{c}"] = z[c]
    frame["median_final_size_entropy"] = frame.launch.map(seeds.groupby("launch").final_size_entropy.median())
    frame["consensus_size_entropy"] = frame.launch.map(
        frame[frame.candidate == launch.CONSENSUS_SELECTED].set_index("launch").size_entropy)
    frame["target"] = frame.acc - frame.launch.map(seeds.groupby("launch").acc.mean())
    frame["family"] = frame.dataset.map(family)
    return frame


def model_inputs(frame: pd.DataFrame) -> np.ndarray:
    return frame[[f"z_{c}" for c in FEATURES] + CONTEXT].to_numpy(np.float64)


def fit(name: str, train: pd.DataFrame):
    """A learned launch rule (issue 35's candidate 'a learned launch assessor
    over candidates with partitions'): predicts a seed's ACC above its
    launch's mean from its label-free columns."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge
    seeds = train[train.kind == "epoch"]
    model = (Ridge(alpha=10.0) if name == "learned_ridge" else
             GradientBoostingRegressor(n_estimators=100, max_depth=2, learning_rate=0.05, subsample=0.8,
                                       random_state=MODEL_SEED))
    return model.fit(model_inputs(seeds), seeds.target.to_numpy())


def learned_choices(name: str, train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """{launch: chosen seed} of the model fitted on `train`."""
    model = fit(name, train)
    seeds = test[test.kind == "epoch"].assign(pred=lambda t: model.predict(model_inputs(t)))
    return {launch_name: int(g.sort_values(["pred", "seed"], ascending=[False, True]).iloc[0].seed)
            for launch_name, g in seeds.groupby("launch")}


def leave_one_family_out(frame: pd.DataFrame) -> dict:
    """{rule: {launch: seed}}: each family's launches chosen by models fitted on the other families'."""
    picks = {name: {} for name in LEARNED}
    for fam in frame.family.unique():
        for name in LEARNED:
            picks[name] |= learned_choices(name, frame[frame.family != fam], frame[frame.family == fam])
    return picks


def batch_of(name: str, dataset: str, data_kind: str) -> str:
    """What the bootstrap resamples: a balanced launch's seed batch, as
    launch_outcomes.csv's `batch` (<data set>_s<first seed>); an uneven
    launch's data set, as uneven_study.py's."""
    if data_kind != "balanced":
        return dataset
    tail = name.rsplit("_", 1)[-1]
    return f"{dataset}_{tail}" if tail[:1] == "s" and tail[1:].isdigit() else f"{dataset}_s0"


def outcomes(frame: pd.DataFrame, learned: dict) -> pd.DataFrame:
    """One row per launch: the ACC of every rule's choice (`launch.LAUNCH_SELECTORS`
    on the launch's rows, and the learned rules' choices), and the baselines."""
    rows = []
    for name, g in frame.groupby("launch", sort=False):
        seeds = g[g.kind == "epoch"].set_index("seed")
        row = {"launch": name, "dataset": g.dataset.iloc[0], "family": g.family.iloc[0],
               "data_kind": g.data_kind.iloc[0], "algorithm": g.algorithm.iloc[0],
               "class_ratio": g.class_ratio.iloc[0], "batch": batch_of(name, g.dataset.iloc[0], g.data_kind.iloc[0]),
               "random_final": seeds.acc_final.mean(), "median_final": float(np.median(seeds.acc_final)),
               "oracle": g.oracle.iloc[0], "median_final_size_entropy": seeds.final_size_entropy.median()}
        for rule in RULES:
            choice = launch.LAUNCH_SELECTORS[rule](g)
            row[rule] = g[g.candidate == choice["candidate"]].acc.iloc[0]
            row[f"{rule}_choice"] = choice["candidate"]
        for rule, picks in learned.items():
            row[rule], row[f"{rule}_choice"] = seeds.acc[picks[name]], f"seed {picks[name]}"
        rows.append(row)
    return pd.DataFrame(rows)


def target_lines(launches: pd.DataFrame, choices: list[str]) -> list[str]:
    """The issue's targets, and each rule's paired difference to `even_sizes`."""
    diffs = []
    for c in choices:
        if c == "even_sizes":
            continue
        d = launches.assign(d=launches[c] - launches.even_sizes)
        lo, hi = np.percentile(launch_study.bootstrap(d, ["d"])["d"], [2.5, 97.5])
        diffs.append({"rule": c, "mean ACC minus even_sizes'": launch_study.pts(d.d.mean()),
                      "95% interval": f"[{launch_study.pts(lo)}, {launch_study.pts(hi)}]"})
    return [*markdown(pd.DataFrame(launch_study.target_rows(launches, ["random_final", *choices]))), "",
            *markdown(pd.DataFrame(diffs)), ""]


def tune():
    """The rules on every launch scored so far (the learned ones leave-one-family-out)."""
    frame = prepare(pd.read_csv(OUT / "seed_rows_seen.csv"))
    launches = outcomes(frame, leave_one_family_out(frame))
    launches.to_csv(OUT / "round2_seen_outcomes.csv", index=False, float_format="%.5g")
    lines = []
    for title, g in (("balanced", launches[launches.data_kind == "balanced"]),
                     ("uneven and tables", launches[launches.data_kind != "balanced"])):
        lines += [f"#### Seen launches, {title}: {len(g)}", "", *target_lines(g, [*RULES, *LEARNED])]
    (OUT / "round2_seen.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def per_seed(names) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-seed picks' outcomes on the round-2 launches (uneven_study's:
    the shipped default, the final epoch, the assessor where it was trained),
    and each launch's chance test on its final partitions, with its interval."""
    assessor = selection.load_assessor(launch_study.ASSESSOR)
    frames, verdicts = [], []
    for name in names:
        for algorithm in FIXED_K:
            stem = uneven_study.launch_name(name, algorithm)
            if (uneven_study.SCORES / f"{stem}.csv").exists() and (uneven_study.PARTITIONS / f"{stem}.npz").exists():
                row, picks = uneven_study.study_launch(name, algorithm, assessor)
                frames.append(picks)
                verdicts.append({"launch": stem, "chance test (final): ARI [95% interval]":
                                 f"{row['chance_value']:.3f} [{row['chance_lo']:.3f}, {row['chance_hi']:.3f}] "
                                 f"{row['chance_verdict']}"})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(verdicts)


def decision(launches: pd.DataFrame, candidate: str = "consensus") -> list[str]:
    """The pre-registered rule (uneven_round2_preregistration.md and
    uneven_round3_preregistration.md, 1.: the same rule, each round its candidate)."""
    d = (launches[candidate] - launches.even_sizes).mean()
    gain = (launches[candidate] - launches.random_final).mean()
    holds = d > 0 and gain >= 0
    return [f"- {candidate} minus `even_sizes` (paired, mean over {len(launches)} launches): "
            f"{launch_study.pts(d)} (needs > 0)",
            f"- {candidate}'s gain over a random seed's final partition: {launch_study.pts(gain)} (needs >= 0)",
            f"- **{candidate} becomes the default for `cluster_sizes=\"unknown\"`**" if holds else
            "- **`even_sizes` stays the default for every data set**", ""]


def against_final(names, algorithms, label: str, choose) -> pd.DataFrame:
    """Per-seed outcomes of `choose(feats, algorithm)` (a `selection.select`
    frame), labelled `label`, beside the final epoch's, on every launch of
    `names` x `algorithms` that has a score table."""
    from dcjax import study
    frames = []
    for name in names:
        for algorithm in algorithms:
            path = uneven_study.SCORES / f"{uneven_study.launch_name(name, algorithm)}.csv"
            if not path.exists():
                continue
            base, truth = study.read_run_csv(path)
            feats = selection.features(base)
            picks = pd.concat([choose(feats, base.attrs["algorithm"]).assign(selector=label),
                               selection.select(feats, "last").assign(selector="last")])
            picks = picks.assign(run=base.attrs["run"])[["run", "selector", "seed", "epoch"]]
            frames.append(study.outcomes(picks, truth.assign(run=base.attrs["run"])).assign(
                dataset=name, algorithm=base.attrs["algorithm"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def shipped_per_seed(names) -> pd.DataFrame:
    """Per-seed outcomes of the package's default when round 3 was scored
    (`launch_study.study_default` with the shipped assessor: the five base
    algorithms' primary, DECCS's final epoch) and the final epoch, on seeds no
    model saw."""
    shipped = selection.load_assessor()

    def default(feats, algorithm):
        chosen = launch_study.study_default(algorithm)
        return selection.select(feats, chosen, shipped if chosen in selection.ASSESSOR_SELECTORS else None)
    return against_final(names, FIXED_K, "shipped default", default)


UNSEEN = ("unseen_dec", "unseen_dcn", "unseen_dkm")


def assessor_per_seed(names, algorithms) -> pd.DataFrame:
    """Per-seed outcomes of the shipped assessor (guarded) and the final epoch
    on algorithms where the default is still the final epoch (round 3, 7.)."""
    shipped = selection.load_assessor()
    return against_final(names, algorithms, "shipped assessor",
                         lambda feats, _: selection.select(feats, "assessor_guarded", shipped))


def tested_on_decision(picks: pd.DataFrame, tested: tuple[str, ...] = ()) -> list[str]:
    """Round 3, 7. (and round 4, 1.-2., on rounds 3 and 4 pooled): a family is
    in selection.TESTED_ON if, pooled over its held-out seeds, the assessor's
    regret is below the final epoch's and its do-no-harm >= 95%. `tested`:
    the families in TESTED_ON before the decision (they stay or leave)."""
    lines = []
    for family_name, algorithms in (("UNSEEN", UNSEEN), ("DECCS", ("deccs",))):
        g = picks[picks.algorithm.isin(algorithms)] if len(picks) else picks
        was_in = family_name in tested
        if not len(g):
            lines.append(f"- {family_name}: no held-out seeds; " + ("it stays" if was_in else "it keeps the final epoch"))
            continue
        a, last = g[g.selector == "shipped assessor"], g[g.selector == "last"]
        holds = a.regret.mean() < last.regret.mean() and a.do_no_harm.mean() >= 0.95
        verdict = ({True: "stays in `TESTED_ON`", False: "leaves `TESTED_ON` (the final epoch)"} if was_in else
                   {True: "joins `TESTED_ON`", False: "keeps the final epoch"})[holds]
        lines.append(f"- {family_name} ({len(a)} seeds): the assessor's regret {launch_study.pts(a.regret.mean())} "
                     f"against the final epoch's {launch_study.pts(last.regret.mean())}, do-no-harm "
                     f"{100 * a.do_no_harm.mean():.0f}%: **{verdict}**")
    return lines + [""]


def unseen_launches(names) -> pd.DataFrame:
    """Round 3, 6.: the UNSEEN launches' rules, reported apart (their default, own_silhouette, unchanged)."""
    assessor = selection.load_assessor(launch_study.ASSESSOR)
    rows = []
    for name in names:
        for algorithm in UNSEEN:
            stem = uneven_study.launch_name(name, algorithm)
            if (uneven_study.SCORES / f"{stem}.csv").exists() and (uneven_study.PARTITIONS / f"{stem}.npz").exists():
                rows.append(uneven_study.study_launch(name, algorithm, assessor)[0])
    return pd.DataFrame(rows)


def test(split: str = "round2"):
    """Once, after the round's pre-registration commit: its test launches."""
    t0 = time.perf_counter()
    spec = ROUNDS[split]
    seen = prepare(pd.concat([pd.read_csv(OUT / f) for f in spec["seen"]], ignore_index=True))
    fresh = prepare(pd.read_csv(OUT / f"seed_rows_{split}.csv"))
    learned = {name: learned_choices(name, seen, fresh) for name in LEARNED}
    launches = outcomes(fresh, learned)
    launches.to_csv(OUT / f"{split}_test_outcomes.csv", index=False, float_format="%.5g")
    seen_uneven = outcomes(seen[seen.data_kind != "balanced"], leave_one_family_out(seen))
    everything = pd.concat([seen_uneven, launches], ignore_index=True)
    picks, verdicts = per_seed(sorted(fresh.dataset.unique()))
    if split == "round2":
        picks.to_csv(OUT / "round2_per_seed_outcomes.csv", index=False, float_format="%.5g")
    else:   # the package's default now (the wider assessor), not the model round 2 pinned
        picks = shipped_per_seed(sorted(fresh.dataset.unique()))
        picks.to_csv(OUT / f"{split}_per_seed_outcomes.csv", index=False, float_format="%.5g")
    per_launch = [{"launch": r["launch"], "class ratio": f"{r['class_ratio']:.1f}",
                   "median final size entropy": f"{r['median_final_size_entropy']:.3f}",
                   **{c: launch_study.pts(r[c]) for c in ["median_final", "random_final", *RULES, *LEARNED,
                                                          "oracle"]}}
                  for r in launches.to_dict("records")]
    number = split.removeprefix("round")
    lines = [f"#### Round-{number} test launches: {len(launches)} ({', '.join(sorted(fresh.dataset.unique()))})",
             "",
             f"Command: `python experiments/launch_rules.py rows --split {split} && python "
             f"experiments/launch_rules.py test --split {split}` ({time.perf_counter() - t0:.0f} s for `test`). "
             "ACC in points; the learned rules fitted on the seen launches.", "",
             *markdown(pd.DataFrame(per_launch)), "",
             "Targets (mean over launches [95% bootstrap over data sets]; ✓ met), and each rule against "
             "`even_sizes`:", "", *target_lines(launches, [*RULES, *LEARNED]),
             f"#### All uneven and tabular launches, rounds 1 to {number}: {len(everything)}", "",
             "(the seen launches' learned-rule choices leave-one-family-out)", "",
             *target_lines(everything, [*RULES, *LEARNED]),
             "#### The pre-registered decision", "", *decision(launches, spec["candidate"]),
             f"#### Per-seed selection on the round-{number} seeds", "",
             *markdown(pd.DataFrame(uneven_study.per_seed_rows(picks))), "",
             f"#### The chance test on the round-{number} launches (final partitions, `chance.chance_test`)", "",
             *markdown(verdicts), ""]
    if split == "round3":
        no_deccs = launches[launches.algorithm != "deccs"]
        names = sorted(fresh.dataset.unique())
        other = assessor_per_seed(names, (*UNSEEN, "deccs"))
        if len(other):
            other.to_csv(OUT / "round3_per_seed_unseen_deccs.csv", index=False, float_format="%.5g")
        unseen = unseen_launches(names)
        lines += [f"#### Round-3 fixed-k launches without DECCS: {len(no_deccs)}", "",
                  *target_lines(no_deccs, [*RULES, *LEARNED]),
                  "#### UNSEEN launches (reported apart; their default is `own_silhouette`)", "",
                  *(markdown(pd.DataFrame([{"launch": r["launch"], **{c: launch_study.pts(r[c]) for c in
                                            ("random_final", "own_silhouette", "launch_silhouette", "consensus",
                                             "even_sizes", "oracle")}} for r in unseen.to_dict("records")]))
                    if len(unseen) else ["none trained by the deadline"]), "",
                  "#### The per-seed assessor on held-out UNSEEN and DECCS seeds (registered rule 7.)", "",
                  *(markdown(pd.DataFrame(uneven_study.per_seed_rows(other))) if len(other) else ["none"]), "",
                  *tested_on_decision(other)]
    (OUT / f"{split}_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# The seed rows of every launch scored before round 4 (rounds 1-3 and the balanced ones).
SCORED_ROWS = ("seed_rows_seen.csv", "seed_rows_round2.csv", "seed_rows_round3.csv")


def read_rows(files) -> pd.DataFrame:
    return prepare(pd.concat([pd.read_csv(OUT / f) for f in files], ignore_index=True))


def fresh_outcomes(split: str) -> pd.DataFrame:
    """A round-4 split's launches: every rule's choice, the learned ones fitted
    on `SCORED_ROWS`; written to <split>_test_outcomes.csv."""
    seen, fresh = read_rows(SCORED_ROWS), read_rows([f"seed_rows_{split}.csv"])
    launches = outcomes(fresh, {name: learned_choices(name, seen, fresh) for name in LEARNED})
    launches.to_csv(OUT / f"{split}_test_outcomes.csv", index=False, float_format="%.5g")
    return launches


def rule_table(launches: pd.DataFrame) -> list[str]:
    """One row per launch: ACC of every rule's choice."""
    return markdown(pd.DataFrame([{"launch": r["launch"], "class ratio": f"{r['class_ratio']:.1f}",
                                   **{c: launch_study.pts(r[c]) for c in ["median_final", "random_final", *RULES,
                                                                          *LEARNED, "oracle"]}}
                                  for r in launches.to_dict("records")]))


def test_round4():
    """Round 4 (uneven_round4_preregistration.md), once: UNSEEN and DECCS on
    the image subsamples; the per-seed decisions on rounds 3 and 4 pooled."""
    t0 = time.perf_counter()
    assessor = selection.load_assessor(launch_study.ASSESSOR)
    deccs = fresh_outcomes("round4")
    deccs3 = pd.read_csv(OUT / "round3_test_outcomes.csv").query("algorithm == 'deccs'")
    unseen = unseen_launches(ROUND4)
    deccs_rows = pd.DataFrame([uneven_study.study_launch(n, "deccs", assessor)[0] for n in ROUND4
                               if (uneven_study.SCORES / f"{uneven_study.launch_name(n, 'deccs')}.csv").exists()])
    picks = assessor_per_seed(ROUND4, (*UNSEEN, "deccs"))
    picks.to_csv(OUT / "round4_per_seed_unseen_deccs.csv", index=False, float_format="%.5g")
    pooled = pd.concat([pd.read_csv(OUT / "round3_per_seed_unseen_deccs.csv"), picks], ignore_index=True)
    per_seed_table = lambda p: markdown(pd.DataFrame(uneven_study.per_seed_rows(  # noqa: E731
        p.assign(algorithm=p.algorithm.map(lambda a: "unseen (3 variants)" if a in UNSEEN else a)))))
    verdicts = [{"launch": r["launch"], "final ACC of the seeds": "", "chance test (final): ARI [95% interval]":
                 f"{r['chance_value']:.3f} [{r['chance_lo']:.3f}, {r['chance_hi']:.3f}] {r['chance_verdict']}"}
                for r in [*deccs_rows.to_dict("records"), *unseen.to_dict("records")]]
    for v in verdicts:
        finals = picks[(picks.selector == "last") & (picks.dataset + "_" + picks.algorithm == v["launch"])].acc_final
        v["final ACC of the seeds"] = ", ".join(f"{100 * a:.1f}" for a in finals)
    missing = [uneven_study.launch_name(n, a) for n in ROUND4 for a in (*UNSEEN, "deccs")
               if not (uneven_study.SCORES / f"{uneven_study.launch_name(n, a)}.csv").exists()]
    unseen_cols = ("random_final", "own_silhouette", "launch_silhouette", "consensus", "even_sizes", "oracle")
    lines = [f"#### Round-4 test launches: {len(deccs)} DECCS and {len(unseen)} UNSEEN "
             f"({', '.join(ROUND4)})", "",
             f"Command: `python experiments/launch_rules.py rows --split round4 && python "
             f"experiments/launch_rules.py test --split round4` ({time.perf_counter() - t0:.0f} s for `test`). "
             "ACC in points. " + (f"Not trained by the deadline: {', '.join(missing)}." if missing else
                                  "Every registered launch was trained."), "",
             "##### The per-seed decisions (registered rules 1. and 2.: rounds 3 and 4 pooled)", "",
             *tested_on_decision(pooled, tested=("DECCS",)),
             "Round 4's held-out seeds alone (UNSEEN's three variants pooled):", "", *per_seed_table(picks), "",
             "Rounds 3 and 4 pooled:", "", *per_seed_table(pooled), "",
             "##### DECCS launches: the launch rules (reported, 4.)", "",
             *rule_table(deccs), "",
             f"Round 4's {len(deccs)} DECCS launches:", "", *target_lines(deccs, [*RULES, *LEARNED]),
             f"With round 3's {len(deccs3)} DECCS launches ({len(deccs) + len(deccs3)}):", "",
             *target_lines(pd.concat([deccs3, deccs], ignore_index=True), [*RULES, *LEARNED]),
             "##### UNSEEN launches (reported, 4.; their default is `own_silhouette`)", "",
             *(markdown(pd.DataFrame([{"launch": r["launch"], **{c: launch_study.pts(r[c]) for c in unseen_cols}}
                                      for r in unseen.to_dict("records")])) if len(unseen) else ["none trained"]), "",
             *(markdown(pd.DataFrame(launch_study.target_rows(unseen.assign(batch=unseen.dataset),
                                                              list(unseen_cols[1:-1])))) if len(unseen) else []), "",
             "##### The chance test (final partitions, `chance.chance_test`; reported, 5.)", "",
             *markdown(pd.DataFrame(verdicts)), ""]
    (OUT / "round4_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def test_deccs5():
    """Round 4, amendment 2 (7.): DECCS launches where it never ran, with every
    DECCS launch of rounds 3 and 4 (reported)."""
    spec = ROUNDS["deccs5"]
    assessor = selection.load_assessor(launch_study.ASSESSOR)
    launches = fresh_outcomes("deccs5")
    earlier = pd.concat([pd.read_csv(OUT / "round3_test_outcomes.csv").query("algorithm == 'deccs'"),
                         pd.read_csv(OUT / "round4_test_outcomes.csv")], ignore_index=True)
    every = pd.concat([earlier, launches], ignore_index=True)
    picks = assessor_per_seed(spec["names"], ("deccs",))
    picks.to_csv(OUT / "deccs5_per_seed.csv", index=False, float_format="%.5g")
    pooled = pd.concat([pd.read_csv(OUT / f"{r}_per_seed_unseen_deccs.csv") for r in ("round3", "round4")] + [picks],
                       ignore_index=True).query("algorithm == 'deccs'")
    rows = [uneven_study.study_launch(n, "deccs", assessor)[0] for n in spec["names"]
            if (uneven_study.SCORES / f"{uneven_study.launch_name(n, 'deccs')}.csv").exists()]
    missing = [n for n in spec["names"] if not (uneven_study.SCORES / f"{n}_deccs.csv").exists()]
    lines = [f"#### DECCS where it never ran: {len(launches)} launches ({', '.join(sorted(launches.dataset.unique()))})",
             "", "Command: `python experiments/launch_rules.py rows --split deccs5 && python "
             "experiments/launch_rules.py test --split deccs5`. ACC in points. "
             + (f"Not trained by 23:20 UTC: {', '.join(missing)}." if missing else "Every registered launch trained."),
             "", *rule_table(launches), "",
             f"These {len(launches)}:", "", *target_lines(launches, [*RULES, *LEARNED]),
             f"Every DECCS launch of rounds 3 and 4 and these ({len(every)}):", "",
             *target_lines(every, [*RULES, *LEARNED]),
             "Per-seed on DECCS (these launches; then with rounds 3 and 4's held-out seeds):", "",
             *markdown(pd.DataFrame(uneven_study.per_seed_rows(picks))), "",
             *markdown(pd.DataFrame(uneven_study.per_seed_rows(pooled))), "",
             "Chance test (final partitions): " + "; ".join(
                 f"{r['launch']} {r['chance_value']:.3f} [{r['chance_lo']:.3f}, {r['chance_hi']:.3f}] "
                 f"{r['chance_verdict']}" for r in rows), ""]
    (OUT / "deccs5_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def test_epochs():
    """Round 4, 6.: the same launches at 150 clustering epochs and at 50."""
    spec = ROUNDS["epochs150"]
    stems = [uneven_study.launch_name(n, a) for n in spec["names"] for a in spec["algorithms"]]
    at = {50: prepare(pd.read_csv(OUT / "seed_rows_round3.csv").query("launch in @stems")),
          150: prepare(pd.read_csv(OUT / "seed_rows_epochs150.csv"))}
    launches = {e: outcomes(f, {}) for e, f in at.items()}
    picks = {}
    for epochs in at:
        uneven_study.set_clustering_epochs(epochs)
        p = shipped_per_seed(spec["names"])
        picks[epochs] = p[p.algorithm.isin(spec["algorithms"])].assign(
            algorithm=lambda t, e=epochs: t.algorithm + f" ({e})")
    uneven_study.set_clustering_epochs(50)
    both = launches[50].merge(launches[150].assign(launch=launches[150].launch.str.removesuffix("_e150")),
                              on="launch", suffixes=(" (50)", " (150)"))
    columns = ("oracle", "random_final", "even_sizes", "launch_silhouette", "own_silhouette")
    lines = [f"#### The same {len(both)} launches at 50 and 150 clustering epochs", "",
             "Command: `python experiments/launch_rules.py rows --split epochs150 && python "
             "experiments/launch_rules.py test --split epochs150`. ACC in points.", "",
             *markdown(pd.DataFrame([{"launch": r["launch"], **{f"{c} ({e})": launch_study.pts(r[f"{c} ({e})"])
                                                                for c in columns for e in (50, 150)}}
                                     for r in both.to_dict("records")])), ""]
    for epochs, g in launches.items():
        lines += [f"Launch rules at {epochs} epochs:", "", *target_lines(g, RULES)]
    lines += ["Per-seed: the shipped default against the final epoch (algorithm (epochs)):", "",
              *markdown(pd.DataFrame(uneven_study.per_seed_rows(pd.concat(picks.values(), ignore_index=True)))), ""]
    (OUT / "epochs150_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


SECTION = "## Uneven clusters and tables, round 2 (issue 35)"
PREREGISTRATION = "c001602, amended before scoring in 762eaf4 (the deadline) and 4ddb54f (the wider assessor's tables)"
SECTION3 = "## Uneven clusters and tables, round 3 (issue 35)"
PREREGISTRATION3 = "84ad810"
SECTION4 = "## UNSEEN and DECCS on the uneven image subsamples, round 4 (issue 35)"


def write_section(notes: str = "", split: str = "round2"):
    """selection.md's section for a round, from what `tune` and `test` wrote."""
    if split == "round4":
        test_md = OUT / "round4_test.md"
        lines = [SECTION4, "",
                 f"Pre-registered in commit {ROUNDS['round4']['prereg']} "
                 "([uneven_round4_preregistration.md](uneven_round4_preregistration.md)): UNSEEN and DECCS, trained "
                 "on the image subsamples after round 3 was scored, re-test DECCS in `selection.TESTED_ON` and "
                 "UNSEEN's final-epoch default, pooled with round 3's held-out seeds. Per-seed outcomes "
                 "`uneven/round4_per_seed_unseen_deccs.csv`; DECCS launch rows "
                 "[uneven/seed_rows_round4.csv](uneven/seed_rows_round4.csv).", "",
                 test_md.read_text() if test_md.exists() else "not scored yet", "",
                 "### The published 150 clustering epochs (registered 6., reported)", "",
                 f"Amendment {ROUNDS['epochs150']['prereg']}: DEC, IDEC, DCN and DKM on two of round 3's data sets, "
                 "retrained from the same pretraining at 150 clustering epochs; launch outcomes beside the same "
                 "launches at 50.", "",
                 (OUT / "epochs150_test.md").read_text() if (OUT / "epochs150_test.md").exists() else "not scored yet",
                 "", "### DECCS where it never ran (amendment 2, 7., reported)", "",
                 (OUT / "deccs5_test.md").read_text() if (OUT / "deccs5_test.md").exists() else "not scored yet",
                 "", "### How far a launch rule could go (post hoc)", "",
                 "Command: `python experiments/launch_ceiling.py`. Descriptive, on the launches of rounds 1-3: "
                 "nothing here chose a default (the script's docstring says what each row is).", "",
                 (OUT / "launch_ceiling.md").read_text() if (OUT / "launch_ceiling.md").exists() else "not run",
                 "", "### How far a per-seed rule could go (post hoc)", "",
                 "Command: `python experiments/per_seed_ceiling.py`. Descriptive, on the seeds of rounds 1-3.", "",
                 (OUT / "per_seed_ceiling.md").read_text() if (OUT / "per_seed_ceiling.md").exists() else "not run",
                 "", notes]
        launch_study.write_section("\n".join(lines).rstrip("\n").split("\n"), SECTION4)
        return
    if split == "round3":
        test_md = OUT / "round3_test.md"
        lines = [SECTION3, "",
                 f"Pre-registered in commit {PREREGISTRATION3} "
                 "([uneven_round3_preregistration.md](uneven_round3_preregistration.md)): every launch scored before "
                 "(the balanced ones and rounds 1 and 2, tables above) chose the candidate for data of unknown "
                 "cluster sizes, `launch_silhouette`; the round-3 launches (uneven subsamples, Fashion-MNIST among "
                 "them, and the iris table, never scored before) test it. Per-seed rows "
                 "[uneven/seed_rows_round3.csv](uneven/seed_rows_round3.csv); launch outcomes "
                 "`uneven/round3_test_outcomes.csv`; per-seed outcomes `uneven/round3_per_seed_outcomes.csv`.", "",
                 test_md.read_text() if test_md.exists() else "not scored yet", "", notes]
        launch_study.write_section("\n".join(lines).rstrip("\n").split("\n"), SECTION3)
        return
    test_md = OUT / "round2_test.md"
    lines = [SECTION, "",
             f"Pre-registered in commit {PREREGISTRATION} "
             "([uneven_round2_preregistration.md](uneven_round2_preregistration.md)): the seen launches choose, "
             "the round-2 launches (uneven subsamples never scored before) test. Script: "
             "[experiments/launch_rules.py](../launch_rules.py) (`rows`, `tune`, `test`); the per-seed rows "
             "[uneven/seed_rows_seen.csv](uneven/seed_rows_seen.csv) and "
             "[uneven/seed_rows_round2.csv](uneven/seed_rows_round2.csv); launch outcomes "
             "`uneven/round2_{seen,test}_outcomes.csv`. The learned rules: ridge and gradient boosting on the seeds' "
             "label-free columns z-scored within the launch, predicting ACC above the launch's mean.", "",
             "### Seen launches (round 1's and the balanced ones): the rules", "",
             "Command: `python experiments/launch_rules.py tune` (learned rules leave-one-family-out).", "",
             (OUT / "round2_seen.md").read_text(), "",
             "### The test", "", test_md.read_text() if test_md.exists() else "not scored yet", ""]
    wide = OUT / "round2_per_seed_wide.csv"
    if wide.exists():
        lines += ["#### The wider per-seed assessor on the round-2 seeds", "",
                  "Command: `python experiments/assessor_wide.py fit && python experiments/assessor_wide.py test` "
                  "(`wide`: the recipe fitted on the wider grid, guarded; `last`: the final epoch).", "",
                  *markdown(pd.DataFrame(uneven_study.per_seed_rows(pd.read_csv(wide)))), ""]
    lines += [notes]
    launch_study.write_section("\n".join(lines).rstrip("\n").split("\n"), SECTION)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["rows", "tune", "test", "section"])
    ap.add_argument("--notes", default="", help="section: a file of hand-written notes to append")
    ap.add_argument("--split", choices=["seen", *ROUNDS], default=None,
                    help="rows: seen (default) or a round's test launches; test, section: the round (default round2)")
    args = ap.parse_args()
    if args.command == "rows":
        rows(args.split or "seen")
    elif args.command == "tune":
        tune()
    elif args.command == "test":
        {"round4": test_round4, "epochs150": test_epochs, "deccs5": test_deccs5}.get(args.split, lambda: test(args.split or "round2"))()
    else:
        write_section(Path(args.notes).read_text() if args.notes else "", args.split or "round2")


if __name__ == "__main__":
    main()
