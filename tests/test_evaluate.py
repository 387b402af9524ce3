"""The evaluation table of a tiny 3-seed DKM run: shape, values, incremental
re-runs, labels kept apart, and the command line."""
import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from dcjax import checkpointing, data, evaluate, methods, metrics, train

SEEDS, PRETRAIN_EPOCHS, CLUSTERING_EPOCHS = 3, 2, 3


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny run, scored by the command line: (config, workdir, table as written)."""
    cfg = tiny_config("dkm", seeds=SEEDS, pretrain_epochs=PRETRAIN_EPOCHS, clustering_epochs=CLUSTERING_EPOCHS)
    workdir = tmp_path_factory.mktemp("run")
    train.train_and_evaluate(cfg, workdir)
    # The command line's main, in this process (a subprocess would compile everything again).
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluate.main([f"--workdir={workdir}", "--noprogress", "--all_phases"])
    assert "scored 6 epochs" in printed.getvalue() and "from records.jsonl" in printed.getvalue()
    return cfg, workdir, pd.read_csv(workdir / "scores.csv")


def label_free(table):
    return table.drop(columns=evaluate.LABEL_BASED + ["eval_seconds"], errors="ignore")


def test_one_row_per_seed_phase_and_epoch(scored):
    _, _, table = scored
    assert list(table.columns) == evaluate.table_columns(with_labels=True)
    expected = {(s, "pretrain", e) for s in range(SEEDS) for e in range(1, PRETRAIN_EPOCHS + 1)}
    expected |= {(s, "clustering", e) for s in range(SEEDS) for e in range(CLUSTERING_EPOCHS + 1)}
    assert len(table) == len(expected)
    assert set(map(tuple, table[evaluate.KEY].itertuples(index=False))) == expected
    pre, clu = table[table.phase == "pretrain"], table[table.phase == "clustering"]
    assert set(pre.assignment_source) == {"kmeans"} and set(clu.assignment_source) == {"algorithm"}
    # stability and agreement only in clustering; no previous epoch at epoch 0
    assert pre[evaluate.STABILITY + evaluate.AGREEMENT].isna().all().all()
    assert clu[clu.epoch == 0][evaluate.STABILITY].isna().all().all()
    assert clu[clu.epoch > 0][evaluate.STABILITY + evaluate.AGREEMENT].notna().all().all()
    assert (clu.groupby("epoch")[evaluate.AGREEMENT].nunique() == 1).all().all()   # one value per epoch
    # DKM has soft assignments; pretraining rows do not
    assert clu.mean_max_prob.between(0.1, 1).all() and pre.mean_max_prob.isna().all()
    assert table[["acc", "nmi", "ari", "silhouette"]].notna().all().all()
    assert (table.silhouette_points == 400).all() and (table.silhouette_se == 0).all()


def test_label_free_columns_equal_a_direct_metrics_call(scored):
    cfg, workdir, table = scored
    k = 10
    y = jnp.asarray(data.load_dataset(cfg.dataset).y)

    def row(phase, epoch, seed):
        (i,) = np.flatnonzero((table.phase == phase) & (table.epoch == epoch) & (table.seed == seed))
        return table.iloc[i]

    def check(got, expected):
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], float(value), rtol=1e-5, atol=1e-7, err_msg=name)

    # clustering epoch 2, seed 1: the run's assignment and DKM's soft assignment
    snap = checkpointing.load_snapshot(workdir, 2, "clustering")
    z, labels = jnp.asarray(snap["embedding"][1]), jnp.asarray(snap["assignments"][1])
    probs = methods.get_method(cfg).soft_assign(jnp.asarray(snap["centers"][1]), z, 1)
    got = row("clustering", 2, 1)
    check(got, metrics.label_free_scores(z, labels, k, probs))
    before = jnp.asarray(checkpointing.load_snapshot(workdir, 1, "clustering")["assignments"][1])
    check(got, metrics.assignment_stability(before, labels, k))
    check(got, metrics.seed_agreement(jnp.asarray(snap["assignments"]), k))
    check(got, metrics.label_based_scores(y, labels, k))

    # pretraining epoch 2, seed 2: assignments from the evaluation's k-means
    z = jnp.asarray(checkpointing.load_snapshot(workdir, 2, "pretrain")["embedding"][2])
    labels = evaluate.kmeans(z, evaluate.kmeans_key(2, 2), k, int(cfg.kmeans.n_init))
    check(row("pretrain", 2, 2), {**metrics.label_free_scores(z, labels, k),
                                  **metrics.label_based_scores(y, labels, k)})


def test_kmeans_finds_well_separated_blobs():
    from sklearn.datasets import make_blobs
    z, truth = make_blobs(600, 5, centers=6, cluster_std=0.3, random_state=0)
    labels = evaluate.kmeans(jnp.asarray(z, jnp.float32), jax.random.PRNGKey(0), 6, n_init=3)
    assert float(metrics.adjusted_rand_index(jnp.asarray(truth), labels, 6, 6)) == pytest.approx(1.0)


def test_running_again_recomputes_nothing_and_appends_new_epochs(scored, monkeypatch, tmp_path):
    _, workdir, table = scored
    calls = []
    scores = evaluate.label_free_columns
    monkeypatch.setattr(evaluate, "label_free_columns", lambda *a, **kw: calls.append(1) or scores(*a, **kw))

    again = evaluate.evaluate_run(workdir, progress=False, all_phases=True)
    assert calls == [] and again.attrs["computed"] == 0
    pd.testing.assert_frame_equal(again, table)

    # a run that has trained further: its last epoch is not in the table yet
    partial = tmp_path / "partial.csv"
    table[~((table.phase == "clustering") & (table.epoch == CLUSTERING_EPOCHS))].to_csv(partial, index=False)
    grown = evaluate.evaluate_run(workdir, output=partial, progress=False, all_phases=True)
    assert len(calls) == 1 and grown.attrs["computed"] == 1
    pd.testing.assert_frame_equal(grown.drop(columns="eval_seconds"), table.drop(columns="eval_seconds"))


def test_a_table_from_before_unseen_is_read_without_rescoring(scored, tmp_path):
    """scores.csv written before the n_active_clusters column: a fixed-k run's
    every cluster was active, so the column is filled in, nothing is scored."""
    _, workdir, table = scored
    old = tmp_path / "old.csv"
    table.drop(columns="n_active_clusters").to_csv(old, index=False)
    again = evaluate.evaluate_run(workdir, output=old, progress=False, all_phases=True)
    assert again.attrs["computed"] == 0
    pd.testing.assert_frame_equal(again, table, check_dtype=False)


def test_withheld_labels_drop_acc_nmi_ari_and_change_nothing_else(scored, tmp_path):
    _, workdir, table = scored
    blind = evaluate.evaluate_run(workdir, labels=False, output=tmp_path / "blind.csv", progress=False, all_phases=True)
    assert list(blind.columns) == evaluate.table_columns(with_labels=False)
    assert not set(evaluate.LABEL_BASED) & set(blind.columns)
    pd.testing.assert_frame_equal(label_free(blind), label_free(table))
    # a table is never silently extended with other settings
    with pytest.raises(ValueError, match="other settings"):
        evaluate.evaluate_run(workdir, labels=False, progress=False)


def test_large_data_get_the_sampled_silhouette(scored, monkeypatch, tmp_path):
    _, workdir, table = scored
    monkeypatch.setattr(evaluate, "EXACT_SILHOUETTE_MAX_N", 300)      # the run has N = 400
    sampled = evaluate.evaluate_run(workdir, silhouette_samples=200, output=tmp_path / "s.csv", progress=False,
                                    all_phases=True)
    assert (sampled.silhouette_points == 200).all() and (sampled.silhouette_se > 0).all()
    assert (abs(sampled.silhouette - table.silhouette) < 5 * sampled.silhouette_se).all()
    others = sampled.columns.difference(["silhouette", "silhouette_se", "silhouette_points", "eval_seconds"])
    pd.testing.assert_frame_equal(sampled[others], table[others])
    exact = evaluate.evaluate_run(workdir, exact_silhouette=True, output=tmp_path / "e.csv", progress=False,
                                  all_phases=True)
    pd.testing.assert_frame_equal(exact.drop(columns="eval_seconds"), table.drop(columns="eval_seconds"))
