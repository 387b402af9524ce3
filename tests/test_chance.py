"""The label-free chance test and the structureless control data."""
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from dcjax import chance, data, selection, train


def test_verdicts_on_made_up_partitions():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 5, 600)
    same = np.stack([base, (base + 1) % 5, base])                # relabelled copies: full agreement
    result = chance.chance_test(same, 5)
    assert result["looks_like_chance"] is False and result["value"] == pytest.approx(1.0)
    assert result["statistic"] == chance.STATISTIC and result["threshold"] == chance.AGREEMENT_THRESHOLD
    independent = rng.integers(0, 5, (4, 600))                   # each seed cuts on its own
    result = chance.chance_test(independent, 5)
    assert result["looks_like_chance"] is True and abs(result["value"]) < 0.05
    assert "WARNING" in result["message"]
    one_cluster = np.zeros((3, 600), int)                        # agree perfectly, on nothing
    assert chance.chance_test(one_cluster, 5)["looks_like_chance"] is True
    single = chance.chance_test(base[None], 5)
    assert single["looks_like_chance"] is None and single["value"] is None


def test_the_table_version_reads_the_evaluation_columns():
    table = pd.DataFrame({"phase": "clustering", "seed": [0, 1, 0, 1], "epoch": [0, 0, 1, 1],
                          "mean_pairwise_ari": [0.1, 0.1, 0.8, 0.8], "mean_pairwise_nmi": [0.2, 0.2, 0.9, 0.9],
                          "size_entropy": [1.0, 1.0, 0.0, 0.0]})
    out = chance.chance_test_table(table, 10)
    assert out.looks_like_chance.tolist() == [True, True]      # low agreement; then one cluster
    assert out.effective_clusters.tolist() == pytest.approx([10.0, 1.0])


def test_control_data_have_no_structure_but_the_marginals():
    uniform = data.load_dataset({"name": "uniform", "n_samples": 50, "n_features": 3, "n_clusters": 2})
    assert uniform.x.shape == (50, 3) and uniform.y is None
    digits = data.load_dataset({"name": "digits", "normalize": "none"})
    shuffled = data.load_dataset({"name": "shuffled:digits", "normalize": "none"})
    np.testing.assert_array_equal(np.sort(shuffled.x, axis=0), np.sort(digits.x, axis=0))
    np.testing.assert_array_equal(shuffled.y, digits.y)
    assert np.mean(np.all(shuffled.x == digits.x, axis=1)) < 0.01   # rows are new combinations


def test_it_fires_on_noise_and_stays_quiet_on_clear_blobs():
    """The statistic itself, on k-means partitions of 3 seeds (other starts)."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs
    blobs, _ = make_blobs(n_samples=600, n_features=8, centers=5, cluster_std=0.5, random_state=0)
    noise = np.random.default_rng(0).random((600, 8))
    for x, warns in ((blobs, False), (noise, True)):
        partitions = np.stack([KMeans(5, n_init=1, random_state=s).fit_predict(x) for s in range(3)])
        assert chance.chance_test(partitions, 5)["looks_like_chance"] is warns


def test_the_summary_and_select_warn_on_noise(tmp_path):
    cfg = tiny_config("ae_kmeans", seeds=3, pretrain_epochs=3)
    cfg.dataset.name, cfg.dataset.subsample = "uniform", 0
    cfg.dataset.n_samples, cfg.dataset.n_features, cfg.dataset.n_clusters = 400, 16, 5
    summary = train.train_and_evaluate(cfg, tmp_path)
    assert summary["chance"]["looks_like_chance"] is True, summary["chance"]
    assert summary["chance"]["message"] in train.format_summary(summary, tmp_path)
    assert "WARNING" in summary["chance"]["message"]
    # dcjax.select's reading of the same run: the last epoch of its selection
    # phase (pretraining, for AE+k-means), clustered as the score table does
    again = selection.run_chance_test(tmp_path)
    assert again["phase"] == "pretrain" and again["looks_like_chance"] is True


def _noisy_copies(q: float, seeds: int = 5, n: int = 800, k: int = 5) -> np.ndarray:
    """Partitions of one base labelling, each seed relabelling a share q of the points at random."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, k, n)
    return np.stack([np.where(rng.random(n) < q, rng.integers(0, k, n), base) for _ in range(seeds)])


def test_the_interval_is_the_bootstrap_of_the_statistic():
    from sklearn.metrics import adjusted_rand_score
    a, b = _noisy_copies(0.5, seeds=2)
    table = np.zeros((5, 5))
    np.add.at(table, (a, b), 1)
    assert chance._ari_from_tables(table) == pytest.approx(adjusted_rand_score(a, b))
    parts = _noisy_copies(0.15)
    result = chance.chance_test(parts, 5)
    lo, hi = result["interval"]
    assert lo < result["value"] < hi and result["interval_level"] == chance.INTERVAL_LEVEL
    assert chance.chance_test(parts, 5)["interval"] == result["interval"]   # a fixed seed: reproducible


def test_the_interval_lies_below_the_line_on_noise_and_above_it_on_blobs():
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs
    blobs, _ = make_blobs(n_samples=600, n_features=8, centers=5, cluster_std=0.5, random_state=0)
    noise = np.random.default_rng(0).random((600, 8))
    on = {}
    for name, x in (("blobs", blobs), ("noise", noise)):
        partitions = np.stack([KMeans(5, n_init=1, random_state=s).fit_predict(x) for s in range(5)])
        on[name] = chance.chance_test(partitions, 5)
    assert on["noise"]["interval"][1] < chance.AGREEMENT_THRESHOLD and on["noise"]["looks_like_chance"] is True
    assert on["blobs"]["interval"][0] >= chance.AGREEMENT_THRESHOLD and on["blobs"]["looks_like_chance"] is False
    assert "interval" in on["noise"]["message"] and "interval" in on["blobs"]["message"]


def test_near_the_line_it_says_inconclusive():
    result = chance.chance_test(_noisy_copies(0.18), 5)   # agreement ~0.45
    lo, hi = result["interval"]
    assert lo < chance.AGREEMENT_THRESHOLD <= hi
    assert result["looks_like_chance"] is None and result["inconclusive"] is True
    assert "inconclusive" in result["message"]
    # the case: ARI 0.452 on a line at 0.45 is not 'more structure than chance' when its interval straddles it
    said = chance.verdict(0.452, 8.0, 5, interval=(0.41, 0.49))
    assert said["looks_like_chance"] is None and "inconclusive" in said["message"] and "0.410" in said["message"]
    assert chance.verdict(0.452, 8.0, 5)["looks_like_chance"] is False     # without an interval: the point value
    assert chance.verdict(0.60, 1.5, 5, interval=(0.3, 0.9))["looks_like_chance"] is True   # one cluster: no interval needed


def test_two_uneven_clusters_that_every_seed_finds_are_not_called_one_cluster():
    """k = 2 with classes of 212 and 357 (breast cancer's): the seeds agree,
    the effective number of clusters is 1.93, below the k >= 3 line of 2;
    a 95/5 split is still essentially one cluster."""
    rng = np.random.default_rng(0)
    truth = np.r_[np.zeros(212, int), np.ones(357, int)]
    seeds = np.stack([np.where(rng.random(569) < 0.03, 1 - truth, truth) for _ in range(5)])
    result = chance.chance_test(seeds, 2)
    assert 1.5 < result["effective_clusters"] < 2 and result["looks_like_chance"] is False, result["message"]
    lopsided = np.stack([(rng.random(569) < 0.05).astype(int) for _ in range(5)])
    assert chance.chance_test(lopsided, 2)["looks_like_chance"] is True


def test_seeds_that_agreed_at_the_start_of_clustering_and_came_apart_are_not_called_chance():
    """Issue 35's MNIST r5 DKM launch: k-means starts that agree, then each
    seed merges other classes. Built here: 10 classes, every seed starts
    from a noisy copy of them and ends merging its own triples."""
    rng = np.random.default_rng(0)
    n, k = 2000, 10
    classes = rng.integers(0, k, n)
    start = np.stack([np.where(rng.random(n) < 0.05, rng.integers(0, k, n), classes) for _ in range(5)])
    merged = []
    for _ in range(5):
        triples = np.empty(k, int)
        triples[rng.permutation(k)] = np.arange(k) // 3
        merged.append(triples[classes])
    merged = np.stack(merged)
    alone = chance.chance_test(merged, k)                        # without the start: it reads as chance
    assert alone["looks_like_chance"] is True and alone["came_apart"] is False
    result = chance.chance_test(merged, k, start=start)
    assert result["came_apart"] is True and result["looks_like_chance"] is None
    assert result["start"]["looks_like_chance"] is False and result["start"]["interval"][0] >= chance.AGREEMENT_THRESHOLD
    assert "WARNING" in result["message"] and "start of clustering" in result["message"]
    assert "no better than chance" not in result["message"]
    # structureless starts (each seed's k-means of noise) leave the verdict at chance
    noise_start = rng.integers(0, k, (5, n))
    on_noise = chance.chance_test(merged, k, start=noise_start)
    assert on_noise["looks_like_chance"] is True and on_noise["came_apart"] is False
    assert on_noise["start"]["value"] < chance.AGREEMENT_THRESHOLD
    # agreement now: the start is not read
    assert "start" not in chance.chance_test(start, k, start=noise_start)


def test_the_summary_and_select_read_the_start_of_clustering_and_still_warn_on_noise(tmp_path):
    cfg = tiny_config("dec", seeds=3, pretrain_epochs=3)
    cfg.dataset.name, cfg.dataset.subsample = "uniform", 0
    cfg.dataset.n_samples, cfg.dataset.n_features, cfg.dataset.n_clusters = 400, 16, 5
    summary = train.train_and_evaluate(cfg, tmp_path)
    said = summary["chance"]
    assert said["looks_like_chance"] is True and said["came_apart"] is False, said
    assert said["start"]["value"] < chance.AGREEMENT_THRESHOLD          # noise's k-means starts do not agree
    again = selection.run_chance_test(tmp_path)
    assert again["phase"] == "clustering" and again["looks_like_chance"] is True
    assert again["start"]["value"] == pytest.approx(said["start"]["value"], abs=1e-6)
