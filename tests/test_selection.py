"""Label-free epoch selection on a tiny 3-seed DEC run. The labels cannot
change a selection, and neither can their absence or a permutation of them.
The command line writes what the retention needs. Pretraining-phase selection
works (AE+k-means). The assessor round-trips and cross-fits. The study metrics
and the study's CSV are right on hand-made cases."""
import inspect
import json
import shutil
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from dcjax import checkpointing, data, evaluate, metrics, select, selection, study, train
from dcjax import run as run_lib

SEEDS, PRETRAIN_EPOCHS, CLUSTERING_EPOCHS = 3, 3, 8
ALL_SELECTORS = [*selection.ASSESSOR_SELECTORS, *selection.SELECTORS]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny DEC run, scored with labels into its scores.csv: (workdir, table)."""
    workdir = tmp_path_factory.mktemp("dec")
    cfg = tiny_config("dec", seeds=SEEDS, pretrain_epochs=PRETRAIN_EPOCHS, clustering_epochs=CLUSTERING_EPOCHS,
                      **{"checkpoint.max_to_keep": 2, "checkpoint.keep_period": 4})
    train.train_and_evaluate(cfg, workdir)
    return workdir, evaluate.evaluate_run(workdir, progress=False)


@pytest.fixture(scope="module")
def assessor(run):
    """An assessor fitted on the run itself: any fixed model will do here."""
    workdir, table = run
    feats = selection.run_features(workdir)
    return selection.train_assessor([(feats, table[table.phase == "clustering"])], "gbr")


def selections(base, assessor):
    feats = selection.features(base)
    return {name: selection.select(feats, name, assessor)[["seed", "epoch", "why"]] for name in ALL_SELECTORS}


def permuted_labels(monkeypatch):
    load = data.load_dataset

    def permuted(cfg):
        ds = load(cfg)
        return ds._replace(y=np.random.default_rng(1).permutation(ds.y))
    monkeypatch.setattr(data, "load_dataset", permuted)


def test_labels_withheld_or_permuted_change_no_selection(run, assessor, monkeypatch, tmp_path):
    workdir, labelled = run
    blind = evaluate.evaluate_run(workdir, labels=False, output=tmp_path / "blind.csv", progress=False)
    with monkeypatch.context() as m:
        permuted_labels(m)
        shuffled = evaluate.evaluate_run(workdir, output=tmp_path / "shuffled.csv", progress=False)
    assert not np.allclose(shuffled.acc, labelled.acc)      # the permutation reached the labels

    bases = [selection.base_table(workdir, scores=t) for t in (labelled, blind, shuffled)]
    assert not set(evaluate.LABEL_BASED) & set(selection.features(bases[0]).columns)
    for base in bases[1:]:
        pd.testing.assert_frame_equal(base, bases[0])
    # labels smuggled into the base table are not read either
    rng = np.random.default_rng(0)
    smuggled = bases[0].assign(**{c: rng.random(len(bases[0])) for c in evaluate.LABEL_BASED})
    expected = selections(bases[0], assessor)
    for base in bases[1:] + [smuggled]:
        got = selections(base, assessor)
        for name in ALL_SELECTORS:
            pd.testing.assert_frame_equal(got[name], expected[name], obj=name)


def test_no_label_free_function_takes_a_label_argument():
    label_names = {"y", "y_true", "truth", "acc", "nmi", "ari", "ground_truth", "targets"}
    label_free = [selection.scores_table, selection.loss_table, selection.snapshot_table, selection.base_table,
                  selection.pooled_indices, selection.reference_indices, selection.ace_aggregate,
                  selection.dip_pvalue, selection.features, selection.curve_features, selection.change_points,
                  selection.rank_features, selection.assessor_predict, selection.explain,
                  selection.assessor_selector, selection.select, selection.select_run,
                  *selection.SELECTORS.values()]
    for fn in label_free:
        params = set(inspect.signature(fn).parameters)
        assert not params & label_names, (fn.__name__, params & label_names)
    # scores_table's only label switch defaults to off
    assert inspect.signature(selection.scores_table).parameters["labels"].default is False


def test_command_line_on_a_run_without_labels_matches_and_marks_the_epochs(run, assessor, monkeypatch, tmp_path, capsys):
    workdir, table = run
    feats = selection.run_features(workdir)
    expected = {name: selection.select(feats, name, assessor) for name in ("pooled_silhouette", "assessor")}
    # the same run on a machine with no labels at all: no scores.csv, y deleted
    blind = tmp_path / "blind_run"
    shutil.copytree(workdir, blind, ignore=shutil.ignore_patterns("scores.csv"))
    load = data.load_dataset
    monkeypatch.setattr(data, "load_dataset", lambda cfg: load(cfg)._replace(y=None))
    path = selection.save_assessor(assessor, tmp_path / "a.joblib")

    select.main(["--workdir", str(blind), "--selector", "pooled_silhouette"])
    guarded = select.main(["--workdir", str(blind), "--assessor", str(path)])   # the default: the margin guard
    assert guarded["selector"] == "assessor_guarded"
    assert [s["epoch"] for s in guarded["seeds"]] == selection.select(
        feats, "assessor_guarded", assessor).epoch.tolist()
    noise = selection.noise_dominated(feats)
    assert [s["noise_dominated"] for s in guarded["seeds"]] == noise.noisy.tolist()
    select.main(["--workdir", str(blind), "--selector", "assessor", "--assessor", str(path)])
    assert "acc" not in pd.read_csv(blind / "scores.csv").columns
    printed = capsys.readouterr().out
    assert "seed 0: epoch" in printed and "top features" in printed

    result = json.loads((blind / "selection.json").read_text())
    assert result["selector"] == "assessor" and result["phase"] == "clustering"
    assert [(s["seed"], s["epoch"]) for s in result["seeds"]] == list(
        zip(expected["assessor"].seed, expected["assessor"].epoch))
    states = set(checkpointing.list_epochs(blind, "clustering", kind="state"))
    for s in result["seeds"]:
        assert s["state_present"] == (s["epoch"] in states) and s["final_epoch"] == CLUSTERING_EPOCHS
        assert len(s["top_features"]) == 3 and Path(s["snapshot"]).exists()
    keep = json.loads((blind / "keep_epochs.json").read_text())
    assert keep == {"clustering": sorted(set(expected["assessor"].epoch) | set(expected["pooled_silhouette"].epoch)
                                        | {s["epoch"] for s in guarded["seeds"]})}


def test_pooled_indices_are_the_mean_over_reference_embeddings(run):
    workdir, _ = run
    table = selection.snapshot_table(workdir, "clustering", every=3)
    sample = np.sort(np.random.default_rng(selection.POOLED_KEY).choice(400, min(selection.POOLED_POINTS, 400),
                                                                         replace=False))
    refs = [0, 3, 6, CLUSTERING_EPOCHS]
    labels = jnp.asarray(checkpointing.load_snapshot(workdir, 5)["assignments"][1][sample])
    sil = [metrics.silhouette(jnp.asarray(checkpointing.load_snapshot(workdir, f)["embedding"][1][sample]), labels, 10)
           for f in refs]
    got = table[(table.epoch == 5) & (table.seed == 1)].pooled_silhouette.item()
    np.testing.assert_allclose(got, np.mean(sil), rtol=1e-5)


def test_ace_keeps_the_concordant_admissible_spaces_and_weights_them():
    """Three spaces rank the 6 partitions alike, one ranks them in reverse, one
    has no cluster structure (not admissible): ACE is the weighted mean rank
    over the three concordant spaces, with equal weights by symmetry."""
    good = np.arange(6.0)
    scores = np.stack([good, good + 0.1, 2 * good, -good, good[::-1] * 3], axis=1)   # (E=6, F=5)
    admissible = np.array([True, True, True, True, False])
    ace, weights = selection.ace_aggregate(scores, admissible)
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3, 0, 0], atol=1e-9)
    np.testing.assert_allclose(ace, (good + 1) / 6, atol=1e-9)
    assert np.argmax(ace) == 5
    # no admissible space: every finite space is used; all-NaN scores give NaN, not a crash
    assert np.isfinite(selection.ace_aggregate(scores, np.zeros(5, bool))[0]).all()
    assert np.isnan(selection.ace_aggregate(np.full((6, 2), np.nan), np.ones(2, bool))[0]).all()


def test_dip_test_tells_clustered_spaces_from_one_blob():
    rng = np.random.default_rng(0)
    blob = rng.normal(size=(300, 5))
    clusters = np.concatenate([rng.normal(size=(100, 5)) + 12 * np.eye(5)[i] for i in range(3)])
    assert selection.dip_pvalue(clusters) < selection.ACE_DIP_ALPHA < selection.dip_pvalue(blob)


def test_snapshot_table_has_ace_scores_and_ace_selectors_run(run):
    workdir, _ = run
    table = selection.snapshot_table(workdir, "clustering", every=3)
    for name in selection.ACE:
        values = table[name].to_numpy()
        assert np.isfinite(values).all() and (values > 0).all() and (values <= 1).all()
    feats = selection.run_features(workdir)
    assert set(selection.ACE) <= set(selection.available_selectors(feats))
    assert not set(selection.ACE) & set(selection.feature_names(feats))     # a baseline, not an assessor input
    assert "ace_silhouette" not in selection.available_selectors(feats.drop(columns=selection.ACE))


def test_pretraining_phase_is_selected_where_clustering_has_only_epoch_0(run, tmp_path):
    """AE+k-means: its clustering phase is epoch 0 alone, so its pretraining
    epochs (k-means'd) are the candidates. Mimicked by a copy of the run
    without clustering epochs 1.. and with AE+k-means's clustering.epochs = 0,
    to spare a second tiny training. The same copy with its own config is a
    run stopped after clustering epoch 0: still the clustering phase, and
    its status says it is incomplete."""
    workdir, _ = run
    assert selection.selection_phase(workdir) == "clustering"
    ae = tmp_path / "ae_like"
    shutil.copytree(workdir, ae)
    for epoch in range(1, CLUSTERING_EPOCHS + 1):
        shutil.rmtree(checkpointing.epoch_dir(ae, epoch))
    shutil.rmtree(ae / "scored")
    stopped = run_lib.RunRecord(ae)
    assert stopped.selection_phase == "clustering"
    status = stopped.status()
    assert not status["complete"] and not status["in_progress"]
    assert f"has 0 of {CLUSTERING_EPOCHS} epochs" in status["message"] and "not the configured run's end" in status["message"]
    config = json.loads((ae / "config.json").read_text())
    config["clustering"]["epochs"] = 0
    (ae / "config.json").write_text(json.dumps(config))
    assert selection.selection_phase(ae) == "pretrain"
    base = selection.base_table(ae)
    assert base.attrs["phase"] == "pretrain" and list(base.epoch.unique()) == list(range(1, PRETRAIN_EPOCHS + 1))
    assert base.loss_total.notna().all() and base.pooled_silhouette.notna().all()
    # stability and agreement come from the k-means partitions of the snapshot pass
    assert base[base.epoch > 1][evaluate.STABILITY + evaluate.AGREEMENT].notna().all().all()
    assert base[base.epoch == 1][evaluate.STABILITY].isna().all().all() and base.mean_pairwise_ari.notna().all()
    chosen = selection.select(selection.features(base), "max_agreement")
    assert chosen.epoch.nunique() == 1 and chosen.epoch.iloc[0] in range(1, PRETRAIN_EPOCHS + 1)


def fake_run(dataset, algorithm, seed_shift=0, epochs=30):
    """Features where `signal` peaks where ACC does (at a run-specific epoch); `noise` is noise."""
    rng = np.random.default_rng(zlib.crc32(f"{dataset}/{algorithm}".encode()))
    rows, truth = [], []
    for seed in range(3):
        peak = rng.integers(3, epochs - 3)
        acc = 0.8 - 0.002 * np.abs(np.arange(epochs) - peak)
        rows.append(pd.DataFrame({"seed": seed, "epoch": np.arange(epochs), "signal": acc + seed_shift,
                                  "noise": rng.random(epochs)}))
        truth.append(pd.DataFrame({"seed": seed, "epoch": np.arange(epochs), "acc": acc}))
    feats = pd.concat(rows, ignore_index=True)
    feats.attrs.update(run=f"{dataset}/{algorithm}", dataset=dataset, algorithm=algorithm)
    return feats, pd.concat(truth, ignore_index=True)


def test_assessor_saves_loads_and_cross_fits(tmp_path):
    runs = [fake_run(d, a) for d in ("d1", "d2") for a in ("a1", "a2")]
    assessor = selection.train_assessor(runs[1:], "ridge")
    loaded = selection.load_assessor(selection.save_assessor(assessor, tmp_path / "x.joblib"))
    np.testing.assert_array_equal(selection.assessor_predict(loaded, runs[0][0]),
                                  selection.assessor_predict(assessor, runs[0][0]))
    for group in ("dataset", "algorithm"):
        chosen = study.cross_fit(runs, group, "ridge")
        assert set(chosen) == {f.attrs["run"] for f, _ in runs}
        for feats, truth in runs:   # the held-out run's peak is found: `signal` generalises
            oracle = truth.loc[truth.groupby("seed").acc.idxmax()].epoch.to_numpy()
            np.testing.assert_array_equal(chosen[feats.attrs["run"]].epoch, oracle)
    # leave-one-dataset-out with one data set has nothing to train on
    assert study.cross_fit([fake_run("d1", "a1"), fake_run("d1", "a2")], "dataset") == {}


def test_ties_go_to_the_later_epoch_and_nan_never_wins():
    feats = pd.DataFrame({"seed": 0, "epoch": range(5), "s": [np.nan, 0.5, 0.9, 0.9, 0.1]})
    assert selection._pick(feats, "s", "max").epoch.item() == 3
    assert selection._pick(feats, "s", "min").epoch.item() == 4
    assert selection._pick(feats.assign(s=np.nan), "s", "max").epoch.item() == 4


def test_study_metrics_on_a_hand_made_case():
    # one run, two seeds; epochs 0..3; ACC peaks at 1 (seed 0) and is flat after 2 (seed 1)
    truth = pd.DataFrame({"run": "r", "seed": [0] * 4 + [1] * 4, "epoch": list(range(4)) * 2,
                          "acc": [0.70, 0.80, 0.75, 0.72, 0.60, 0.65, 0.70, 0.70]})
    truth["nmi"], truth["ari"] = truth.acc, truth.acc
    picks = pd.DataFrame({"run": "r", "selector": ["last", "last", "s", "s"], "seed": [0, 1, 0, 1],
                          "epoch": [3, 3, 1, 0]})
    out = study.outcomes(picks, truth).set_index(["selector", "seed"])
    assert out.loc[("s", 0), "oracle_epoch"] == 1 and out.loc[("s", 1), "oracle_epoch"] == 3   # ties: later
    np.testing.assert_allclose(out.loc[("s", 0), ["regret", "gain_vs_final"]].astype(float), [0.0, 0.08])
    np.testing.assert_allclose(out.loc[("s", 1), ["regret", "gain_vs_final"]].astype(float), [0.10, -0.10])
    summary = study.summarize(out.reset_index(), ["selector"]).set_index("selector")
    assert summary.loc["s", "win"] == 0.5 and summary.loc["s", "do_no_harm"] == 0.5
    assert summary.loc["last", "do_no_harm"] == 1.0 and summary.loc["last", "win"] == 0.0
    test = study.wilcoxon_vs(out.reset_index(), "last").set_index("selector")
    assert test.loc["s", "better"] == 1 and test.loc["s", "worse"] == 1 and 0 < test.loc["s", "p_greater"] <= 1
    ovf = study.oracle_vs_final(truth).iloc[0]
    assert ovf.differs == 0.5 and ovf.differs_by_half_point == 0.5
    np.testing.assert_allclose(ovf.mean_gain, 0.04)
    # per seed: |ΔACC| (0.10 + 0.05 + 0.03) / 3 and (0.05 + 0.05 + 0) / 3, averaged
    np.testing.assert_allclose(ovf.step_change, (0.18 / 3 + 0.10 / 3) / 2)
    r0 = np.corrcoef([0.70, 0.80, 0.75], [0.80, 0.75, 0.72])[0, 1]
    r1 = np.corrcoef([0.60, 0.65, 0.70], [0.65, 0.70, 0.70])[0, 1]
    np.testing.assert_allclose(ovf.lag1_autocorr, (r0 + r1) / 2)
    feats = truth[["seed", "epoch"]].assign(up=truth.acc, down=-truth.acc)
    rho = study.score_acc_spearman(feats, truth, ["up", "down"])
    np.testing.assert_allclose(rho.to_numpy(), [1.0, -1.0])


def test_a_runs_study_table_round_trips_its_csv(run, tmp_path):
    """`dcjax.study`'s CSV (what experiments/selection_study.py writes to
    experiments/results/scores/): the labels come back apart from the
    label-free table, and the outcomes of every selector can be scored on it."""
    workdir, _ = run
    base, truth = study.read_run_csv(study.write_run_csv(workdir, tmp_path))
    assert base.attrs["algorithm"] == "dec" and not set(evaluate.LABEL_BASED) & set(base.columns)
    assert truth.acc.notna().all() and len(base) == SEEDS * (CLUSTERING_EPOCHS + 1)
    feats = selection.features(base)
    picks = pd.concat([selection.select(feats, name).assign(run=base.attrs["run"], selector=name)
                       for name in selection.SELECTORS])
    out = study.outcomes(picks, truth)
    assert len(out) == len(picks) and {"regret", "acc_selected"} <= set(out.columns)
    last = out[out.selector == "last"]
    assert (last.epoch == last.final_epoch).all() and np.allclose(last.gain_vs_final, 0)


def test_bootstrap_of_the_targets_resamples_whole_seed_groups():
    # two data sets x two seeds x two algorithms; one (data set, seed) group carries all the regret
    out = pd.DataFrame({"selector": "a", "dataset": ["d"] * 4 + ["e"] * 4, "seed": [0, 0, 1, 1] * 2,
                        "regret": [0.04, 0.04, 0, 0, 0, 0, 0, 0], "gain_vs_final": [-0.01, -0.01, 0, 0, 0, 0, 0, 0.01]})
    out["do_no_harm"] = out.gain_vs_final >= -study.DO_NO_HARM
    table = study.bootstrap_targets(out, "a", resamples=400).set_index("measure")
    assert table.at["mean regret", "all pairs"] == "1.00"       # 8 points over 8 pairs
    lo, hi = map(float, table.at["mean regret", "95% interval"].split(" – "))
    # a resample holds the heavy group 0..4 times of 4: the mean is 0, 1, 2, 3 or 4 points, never in between
    assert lo == 0.0 and hi >= 2.0
    met = float(table.at["mean regret", "resamples meeting the target"].rstrip("%"))
    assert 55 <= met <= 85                                      # P(heavy group drawn <= once) = 0.74
    assert table.at["do-no-harm %", "all pairs"] == "75.00"
    # the heavy group drawn 3 or 4 times (5% of resamples) leaves 25% or 0% of pairs without harm
    assert table.at["do-no-harm %", "95% interval"].startswith("25.00")
    # a selector with no regret anywhere meets the regret targets in every resample
    clean = study.bootstrap_targets(out.assign(regret=0.0), "a", resamples=50).set_index("measure")
    assert clean.at["p90 regret", "resamples meeting the target"] == "100%"


def test_guarded_assessor_keeps_the_final_epoch_unless_clearly_better():
    runs = [fake_run(d, a) for d in ("d1", "d2") for a in ("a1", "a2")]
    assessor = selection.train_assessor(runs[1:], "ridge")
    feats = runs[0][0]
    predicted = selection.assessor_predict(assessor, feats.reset_index(drop=True))
    free = selection.assessor_selector(assessor)(feats)
    never = selection.assessor_selector(assessor, guard=10.0)(feats)   # no epoch can beat the final by 10
    assert (never.epoch.to_numpy() == feats.groupby("seed").epoch.max().to_numpy()).all()
    assert never.why.str.contains("final epoch is kept").all()
    # a guard just under the predicted gain lets the free choice through
    gains = [predicted[idx].max() - predicted[idx][np.argmax(feats.epoch.to_numpy()[idx])]
             for idx in feats.reset_index(drop=True).groupby("seed").indices.values()]
    assert min(gains) > 0   # the fake runs peak before their last epoch
    loose = selection.assessor_selector(assessor, guard=min(gains) / 2)(feats)
    pd.testing.assert_frame_equal(loose[["seed", "epoch"]], free[["seed", "epoch"]])


def test_assessor_targets_rank_and_gap():
    acc = pd.Series([0.5, 0.7, 0.6, 0.2, 0.2, 0.9])
    seeds = pd.Series([0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(selection.assessor_target(acc, seeds, "gap"), [-0.2, 0.0, -0.1, -0.7, -0.7, 0.0])
    np.testing.assert_allclose(selection.assessor_target(acc, seeds, "rank"), [1 / 3, 1.0, 2 / 3, 0.5, 0.5, 1.0])
    with pytest.raises(ValueError, match="target"):
        selection.assessor_target(acc, seeds, "acc")
    runs = [fake_run(d, a) for d in ("d1", "d2") for a in ("a1", "a2")]
    gap = selection.train_assessor(runs[1:], "ridge", target="gap")
    assert gap["target"] == "gap" and selection.guard_margin(gap) == selection.GUARD_MARGINS["gap"]


def test_ensemble_assessor_averages_its_members_ranks_and_guards_with_the_gap_model(tmp_path):
    runs = [fake_run(d, a) for d in ("d1", "d2") for a in ("a1", "a2")]
    ensemble = selection.train_assessor(runs[1:], "ridge", target="ensemble")
    assert set(ensemble["members"]) == set(selection.ENSEMBLE_TARGETS) == {"rank", "gap"}
    feats = runs[0][0].reset_index(drop=True)
    members = {t: selection.assessor_predict(m, feats) for t, m in ensemble["members"].items()}
    expected = np.mean([selection.within_seed_rank(pd.Series(v), feats.seed) for v in members.values()], axis=0)
    np.testing.assert_allclose(selection.assessor_predict(ensemble, feats), expected)
    loaded = selection.load_assessor(selection.save_assessor(ensemble, tmp_path / "e.joblib"))
    np.testing.assert_array_equal(selection.assessor_predict(loaded, feats), expected)
    # the held-out run's peaks are found, and each member explains itself
    chosen = selection.assessor_selector(ensemble)(feats)
    oracle = runs[0][1].loc[runs[0][1].groupby("seed").acc.idxmax()].epoch.to_numpy()
    np.testing.assert_array_equal(chosen.epoch, oracle)
    assert {t["model"] for t in chosen.top_features.iloc[0]} == {"rank", "gap"}
    # the guard reads the gap model (ACC units): a margin above its predicted gain keeps the final epoch
    gap = members["gap"]
    gains = [gap[idx][feats.epoch.to_numpy()[idx] == e].item() - gap[idx].take(np.argmax(feats.epoch.to_numpy()[idx]))
             for (_, idx), e in zip(sorted(feats.groupby("seed").indices.items()), chosen.epoch)]
    assert min(gains) > 0 and selection.guard_margin(ensemble) == selection.GUARD_MARGINS["gap"]
    kept = selection.assessor_selector(ensemble, guard=max(gains) + 1e-6)(feats)
    assert (kept.epoch.to_numpy() == feats.groupby("seed").epoch.max().to_numpy()).all()
    through = selection.assessor_selector(ensemble, guard=min(gains) / 2)(feats)
    np.testing.assert_array_equal(through.epoch, chosen.epoch)


def test_guarded_agreement_leaves_the_final_epoch_only_for_a_clear_gain():
    g = selection.AGREEMENT_GUARD
    feats = pd.DataFrame({"seed": [0] * 4 + [1] * 4, "epoch": [0, 1, 2, 3] * 2,
                          "mean_pairwise_ari": [0.9, 0.5, 0.6, 0.9 - g / 2,     # gain below the guard
                                                0.9, 0.5, 0.6, 0.9 - 2 * g]})  # gain above it
    chosen = selection.select(feats, "max_agreement_guarded")
    assert chosen.epoch.tolist() == [3, 0]
    assert "final epoch kept" in chosen.why.iloc[0] and "final epoch kept" not in chosen.why.iloc[1]


def test_noise_detector_flags_partitions_that_jump_and_the_noise_guard_keeps_their_final_epoch():
    rng = np.random.default_rng(0)
    epochs = np.arange(40)
    smooth = 0.3 + 0.002 * epochs + 0.01 * np.sin(epochs / 6)         # quality drifts: consecutive epochs alike
    jumpy = 0.3 + 0.05 * rng.standard_normal(40)                       # quality redrawn every epoch
    feats = pd.DataFrame({"seed": np.repeat([0, 1], 40), "epoch": np.tile(epochs, 2),
                          selection.NOISE_COLUMN: np.concatenate([smooth, jumpy])})
    noise = selection.noise_dominated(feats).set_index("seed")
    assert noise.autocorr[0] > 0.9 and noise.autocorr[1] < selection.NOISE_AUTOCORR
    assert noise.noisy.tolist() == [False, True]
    # no column, or a constant one: never flagged
    assert not selection.noise_dominated(feats.drop(columns=selection.NOISE_COLUMN)).noisy.any()
    assert not selection.noise_dominated(feats.assign(**{selection.NOISE_COLUMN: 1.0})).noisy.any()
    np.testing.assert_allclose(selection.lag1_autocorr([1.0, 2.0, 3.0, 2.0]), np.corrcoef([1, 2, 3], [2, 3, 2])[0, 1])
    # the guard: the flagged seed keeps its final epoch, the other is left to the assessor
    runs = [fake_run(d, a) for d in ("d1", "d2") for a in ("a1", "a2")]
    assessor = selection.train_assessor(runs[1:], "ridge")
    held = runs[0][0].reset_index(drop=True)
    per_seed = {0: jumpy[:30], 1: smooth[:30], 2: smooth[:30][::-1]}
    held[selection.NOISE_COLUMN] = np.concatenate([per_seed[s] for s in sorted(held.seed.unique())])
    free = selection.assessor_selector(assessor)(held).set_index("seed")
    guarded = selection.assessor_selector(assessor, noise_guard=True)(held).set_index("seed")
    assert free.epoch[0] != 29 and guarded.epoch[0] == 29 and "noise-dominated" in guarded.why[0]
    assert guarded.epoch[1] == free.epoch[1] and guarded.epoch[2] == free.epoch[2]
    # 'assessor_noise_guarded' applies it, 'assessor_guarded' (the margin guard alone) does not
    assert selection.select(held, "assessor_noise_guarded", assessor).set_index("seed").epoch[0] == 29
    margin_only = selection.select(held, "assessor_guarded", assessor).set_index("seed")
    assert "noise-dominated" not in margin_only.why[0]


def test_cross_fit_cache_reuses_fitted_members_and_changes_nothing():
    runs = [fake_run(d, a) for d in ("d1", "d2") for a in ("a1", "a2")]
    cache = {}
    rank = study.cross_fit(runs, "dataset", "ridge", cache=cache)
    assert set(cache) == {("dataset", d, "ridge", "rank", 0) for d in ("d1", "d2")}
    fitted = dict(cache)
    cached = study.cross_fit(runs, "dataset", "ridge", target="ensemble", cache=cache)
    assert all(cache[k] is fitted[k] for k in fitted) and len(cache) == 4   # rank reused, gap added
    fresh = study.cross_fit(runs, "dataset", "ridge", target="ensemble")
    for run in fresh:
        pd.testing.assert_frame_equal(cached[run][["seed", "epoch"]], fresh[run][["seed", "epoch"]])
    assert set(rank) == set(fresh)


def test_model_seed_reaches_the_boosted_models_and_keys_the_cache():
    runs = [fake_run(d, a) for d in ("d1", "d2") for a in ("a1", "a2")]
    ensemble = selection.train_assessor(runs, "gbr", target="ensemble", seed=3)
    assert all(m["model"].random_state == 3 for m in ensemble["members"].values())
    cache = {}
    study.cross_fit(runs, "dataset", "gbr", cache=cache)
    study.cross_fit(runs, "dataset", "gbr", cache=cache, seed=1)   # not served from seed 0's fits
    assert {k[-1] for k in cache} == {0, 1} and len(cache) == 4
    assert cache[("dataset", "d1", "gbr", "rank", 1)]["model"].random_state == 1


def test_cross_fit_train_on_limits_the_training_runs_not_the_judged_ones():
    runs = [fake_run(d, a) for d in ("d1", "d2") for a in ("a1", "a2")]
    names = {f.attrs["run"] for f, _ in runs}
    everything = study.cross_fit(runs, "dataset", "ridge", train_on=names)
    plain = study.cross_fit(runs, "dataset", "ridge")
    for run in plain:
        pd.testing.assert_frame_equal(everything[run], plain[run])
    # without d2's runs to learn from, d1's runs have no assessor; d2's are still judged
    only_d1 = study.cross_fit(runs, "dataset", "ridge", train_on={"d1/a1", "d1/a2"})
    assert set(only_d1) == {"d2/a1", "d2/a2"}
    with pytest.raises(ValueError, match="cache"):
        study.cross_fit(runs, "dataset", "ridge", train_on=names, cache={})


def test_default_selector_is_the_assessor_only_on_the_algorithms_it_was_tested_on(tmp_path):
    """'default': the guarded assessor on AE+k-means, DEC, IDEC, DCN, DKM and
    DECCS (where the shipped assessor was tested on held-out seeds), the
    final epoch elsewhere, also on UNSEEN, whose runs it learned from but
    did not beat the final epoch on; an assessor file of the user's own is
    used as asked."""
    learned = selection.trained_algorithms(selection.load_assessor())
    assert {"ae_kmeans", "dec", "idec", "dcn", "dkm", "unseen_dec", "deccs"} <= learned
    for algorithm in ("ae_kmeans", "dec", "idec", "dcn", "dkm", "deccs"):
        assert selection.resolve_default(algorithm) == ("assessor_guarded", None)
    for algorithm in ("unseen_dcn", "unseen_dec", "unseen_dkm"):
        chosen, why = selection.resolve_default(algorithm)
        assert chosen == "last" and f"not of {algorithm} (it learned from some {algorithm} runs;" in why
    chosen, why = selection.resolve_default("my_new_method")
    assert chosen == "last" and "it never learned from my_new_method runs" in why
    assert selection.resolve_default("unseen_dec", tmp_path / "mine.npz") == ("assessor_guarded", None)
