"""DECCS: its ensemble, its weights, a run killed between rounds, the estimator."""
import shutil

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

from conftest import tiny_config
from dcjax import DECCS, checkpointing, train
from dcjax.methods import deccs
from test_train import leaves


def deccs_config():
    """Tiny DECCS. min_gain=1 makes the stopping rule fire at a known round
    whatever the data: round 1 (end of epoch 1, which has nothing to train on
    yet) gains from nothing, rounds 2 and 3 cannot, so round 4 (patience 3)
    stops: epochs 2-4 update the representation, 5-6 do nothing. Every resume
    point (every 2nd epoch) is kept."""
    return tiny_config("deccs", pretrain_epochs=2, clustering_epochs=6, **{
        "dataset.subsample": 300, "kmeans.n_init": 2, "deccs.steps_per_round": 10, "deccs.min_gain": 1.0,
        "checkpoint.resume_every": 2, "checkpoint.keep_resume_every": 2})


@pytest.fixture(scope="module")
def deccs_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("deccs") / "reference"
    return workdir, train.train_and_evaluate(deccs_config(), workdir)


def test_each_member_recovers_well_separated_blobs():
    z, truth = make_blobs(n_samples=240, centers=4, n_features=5, cluster_std=0.5, random_state=0)
    labels = deccs.cluster_with_members(z, 4, seed=0)
    assert labels.shape == (len(deccs.MEMBERS), 240)
    for name, member in zip(deccs.MEMBERS, labels):
        assert adjusted_rand_score(truth, member) == pytest.approx(1.0), name
    # all agree, so every weight is 1
    np.testing.assert_allclose(deccs.member_weights(labels), 1.0)


def test_tiny_clusters_leave_the_round_in_every_member_until_none_is_left():
    a = np.array([0] * 10 + [1] * 10 + [2] * 6)
    b = np.array([0] * 10 + [1] * 5 + [2] * 11)          # b's cluster 1 (5 rows) is tiny
    labels = deccs.drop_tiny_clusters(np.stack([a, b]), min_size=5)
    kept = labels[0] != deccs.UNLABELLED
    np.testing.assert_array_equal(kept, (labels[1] != deccs.UNLABELLED))
    # rows 10-14 go first; that leaves a's cluster 1 with 5 rows, so 15-19 go too
    np.testing.assert_array_equal(np.flatnonzero(~kept), np.arange(10, 20))


@pytest.mark.parametrize("n_classes, scale", [(2, 1.0), (4, 1.0), (4, 1e-3)])
def test_classifiers_predict_what_scikit_learn_predicts(n_classes, scale):
    """On the standardised embedding: a tiny one (a barely trained
    autoencoder) gets the same classifiers, not ones flattened by the L2 penalty."""
    z, y = make_blobs(n_samples=200, centers=n_classes, n_features=3, cluster_std=3.0, random_state=1)
    z = z * scale
    labels = np.stack([np.where(y == 0, 5, y), y])        # member 0 has classes {1.., 5}: gaps are kept
    labels[1, :7] = deccs.UNLABELLED
    weights, bias, present = deccs.fit_classifiers(z, labels, 6, c=1.0)
    for i, target in enumerate(labels):
        rows = target != deccs.UNLABELLED
        scaled = StandardScaler().fit(z).transform(z)
        want = LogisticRegression(C=1.0, max_iter=1000).fit(scaled[rows], target[rows]).predict(scaled)
        logits = np.where(present[i], z @ weights[i] + bias[i], deccs.ABSENT_LOGIT)
        np.testing.assert_array_equal(logits.argmax(1), want)
        assert present[i].sum() == n_classes


def test_member_weights_equal_scikit_learn_nmi(deccs_run):
    """w_i is the mean NMI of member i with the others on the round's kept
    sample rows; recomputed here from what the run stored."""
    deccs_run, _ = deccs_run
    for epoch in (1, 2):
        state = checkpointing.load_state(deccs_run, epoch)
        labels, weights = state["extras"]["sample_labels"][0], state["extras"]["weights"][0]
        kept = labels[:, (labels != deccs.UNLABELLED).all(axis=0)]
        assert kept.shape[1] > 0.5 * labels.shape[1]
        want = [np.mean([normalized_mutual_info_score(kept[i], kept[j]) for j in range(4) if j != i])
                for i in range(4)]
        np.testing.assert_allclose(weights, want, rtol=1e-6)
        snap = checkpointing.load_snapshot(deccs_run, epoch)
        np.testing.assert_allclose(snap["member_weights"][0], want, rtol=1e-6)
        assert snap["agreement"][0] == pytest.approx(np.mean(want), rel=1e-6)
        # the consensus partition is the member that agrees most with the others
        consensus = int(np.argmax(want))
        np.testing.assert_array_equal(snap["assignments"][0], snap["member_assignments"][0, consensus])


def test_deccs_stops_when_agreement_stops_gaining(deccs_run):
    deccs_run, _ = deccs_run
    snaps = [checkpointing.load_snapshot(deccs_run, e) for e in range(7)]
    assert [int(s["rounds"][0]) for s in snaps] == [0, 1, 2, 3, 4, 4, 4]
    assert [bool(s["stopped"][0]) for s in snaps] == [False] * 4 + [True] * 3
    states = [checkpointing.load_state(deccs_run, e) for e in range(7)]

    def same(a, b):
        return all(np.array_equal(u, v) for u, v in zip(leaves(a), leaves(b)))
    assert same(states[0]["params"]["ae"], states[1]["params"]["ae"])       # epoch 1 only clusters
    assert not same(states[1]["params"]["ae"], states[2]["params"]["ae"])
    for later in states[5:]:   # frozen after round 4, its classifiers kept
        assert same(states[4]["params"], later["params"])
    np.testing.assert_array_equal(snaps[4]["member_assignments"], snaps[6]["member_assignments"])


def test_deccs_killed_between_rounds_resumes_to_the_uninterrupted_result(deccs_run, tmp_path):
    """What a kill after round 3 leaves on disk (resume points 0 and 2 and the
    snapshot blocks written with them; epoch 3's snapshot was still waiting
    for its block; tests/test_faults.py kills real processes): it resumes
    from epoch 2 and replays rounds 3-6."""
    reference, summary = deccs_run
    killed = tmp_path / "killed"
    shutil.copytree(reference, killed)
    for epoch in (4, 6):
        shutil.rmtree(checkpointing.epoch_dir(killed, epoch, kind="resume"))
    for item in {checkpointing.epoch_dir(killed, epoch) for epoch in (3, 4, 5, 6)}:
        shutil.rmtree(item)
    assert checkpointing.list_epochs(killed) == [0, 1, 2]
    (killed / "summary.json").unlink()
    assert checkpointing.list_epochs(killed, kind="resume") == [0, 2]
    assert train.train_and_evaluate(deccs_config(), killed) == summary
    assert checkpointing.list_epochs(killed) == list(range(7))
    for epoch in (3, 6):
        a, b = checkpointing.load_state(killed, epoch), checkpointing.load_state(reference, epoch)
        for u, v in zip(leaves(a), leaves(b)):
            np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(checkpointing.load_snapshot(killed, 6)["member_assignments"],
                                  checkpointing.load_snapshot(reference, 6)["member_assignments"])
    a, b = checkpointing.load_records(killed), checkpointing.load_records(reference)
    assert [r["batch_loss"] for r in a] == [r["batch_loss"] for r in b]


def test_the_estimator_predicts_with_its_consensus_classifier(tmp_path):
    x, truth = make_blobs(n_samples=150, n_features=5, centers=3, cluster_std=0.5, random_state=0)
    model = DECCS(n_clusters=3, pretrain_epochs=1, clustering_epochs=2, batch_size=32, hidden_dims=(16, 16, 32),
                  embedding_dim=4, kmeans_n_init=2, steps_per_round=5, selector="last",
                  workdir=str(tmp_path / "run")).fit(x)
    assert model.selected_epoch_.tolist() == [2] and model.classifier_["member"] in deccs.MEMBERS
    np.testing.assert_array_equal(model.predict(x), model.labels_)   # the run's own partition, again
    assert adjusted_rand_score(truth, model.labels_) > 0.9
