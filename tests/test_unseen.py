"""UNSEEN (dying clusters) around DCN, DEC and DKM: the masks, the rule, the loop."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import tiny_config
from dcjax import checkpointing, config as config_lib, data, evaluate, methods, metrics, train
from dcjax.methods.base import EpochEnd, LossInputs, nearest_center
from dcjax.methods.unseen import nearest_neighbour_loss, unpruned_counts


def unseen_config(algorithm="dec", **overrides):
    """A tiny UNSEEN run in which clusters die within the first epochs."""
    defaults = {"unseen.enabled": True, "unseen.k_init": 10, "clustering_epochs": 4,
                "dataset.subsample": 600, "checkpoint.resume_every": 2}
    return tiny_config(algorithm, **(defaults | overrides))


def leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


# ---------------------------------------------------------------- the pieces

@pytest.mark.parametrize("algorithm", ["dcn", "dec", "dkm"])
def test_a_dead_cluster_gets_no_point_no_loss_and_no_gradient(algorithm):
    """Masking a center out is removing it: the loss, its gradients and the
    assignments equal those of the same method with that center deleted."""
    method = methods.get_method(config_lib.make_config(f"unseen_{algorithm}", "digits"))
    rng = np.random.default_rng(0)
    b, e, k, dead = 40, 3, 6, 2
    z = jnp.asarray(rng.normal(size=(b, e)), jnp.float32)
    centers = jnp.asarray(rng.normal(size=(k, e)), jnp.float32).at[dead].set(z[0])   # nearest to z[0]
    x = jnp.asarray(rng.normal(size=(b, 5)), jnp.float32)
    x_rec = x + 0.1
    active = jnp.ones(k, bool).at[dead].set(False)
    keep = np.flatnonzero(np.asarray(active))
    labels = nearest_center(z, centers, active)
    assert dead not in np.asarray(labels)
    compact_labels = jnp.searchsorted(jnp.asarray(keep), labels).astype(jnp.int32)

    def loss(c, zz, extras, act):
        return method.loss(LossInputs(zz, x, x_rec, c, extras, jnp.arange(b), jnp.int32(0), act))

    masked_extras = method.init(z, centers, labels)
    compact_extras = method.init(z, centers[keep], compact_labels)
    gradient = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))   # one dispatch, not hundreds
    (masked, parts), (g_centers, g_z) = gradient(centers, z, masked_extras, active)
    (compact, _), (c_centers, c_z) = gradient(centers[keep], z, compact_extras, None)
    assert float(parts["nearest_neighbour"]) > 0
    np.testing.assert_allclose(masked, compact, rtol=1e-6)
    assert np.all(np.asarray(g_centers[dead]) == 0.0)
    # DKM's α = 1000 multiplies float32 round-off in the distances (whose matmul
    # has another shape with the dead center removed) by 1000 in its gradient
    rtol = 2e-3 if algorithm == "dkm" else 1e-5
    np.testing.assert_allclose(g_centers[keep], c_centers, rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(g_z, c_z, rtol=rtol, atol=1e-7)
    np.testing.assert_array_equal(method.assign(centers, z, active), labels)
    if method.soft_assign is not None:
        probs = method.soft_assign(centers, z, jnp.int32(0), active)
        assert np.all(np.asarray(probs[:, dead]) == 0.0)
        np.testing.assert_allclose(probs[:, keep], method.soft_assign(centers[keep], z, jnp.int32(0)), rtol=1e-6)
    if algorithm == "dcn":   # the center rule does not move a dead center, nor count points for it
        extras, moved = method.after_step(masked_extras, centers, z, jnp.arange(b), active)
        np.testing.assert_array_equal(moved[dead], centers[dead])
        assert float(extras["counts"][dead]) == float(masked_extras["counts"][dead])
        assert not np.array_equal(moved[keep], centers[keep])


@pytest.mark.parametrize("n_active, normalise", [(35, False), (4, True), (3, False)])
def test_nearest_neighbour_loss_is_the_papers(n_active, normalise):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(64, 3)).astype(np.float32)
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1).astype(np.float64)
    neighbours = max(1, len(z) // n_active)
    nearest = np.sort(d2 + np.diag(np.full(len(z), np.inf)), axis=1)[:, :neighbours]   # itself excluded
    expected = nearest.mean()
    if normalise:
        expected /= d2[~np.eye(len(z), dtype=bool)].mean()
    got = nearest_neighbour_loss(jnp.asarray(z), jnp.int32(n_active), normalise)
    assert float(got) == pytest.approx(expected, rel=1e-4)


def reference_code_epoch_end(init_labels, init_sizes, ids, z, centers, t):
    """The public code's bookkeeping, transcribed in numpy: compacted arrays,
    labels renumbered after a removal. `ids`: original index of each kept center."""
    def nearest(cs):
        return np.argmin(((z[:, None] - cs[None]) ** 2).sum(-1), axis=1)
    sizes = np.bincount(nearest(centers[ids]), minlength=len(ids))
    keep = sizes / init_sizes >= t
    if keep.all():
        return init_labels, init_sizes, ids
    deleted = np.flatnonzero(~keep)
    in_deleted = np.isin(init_labels, deleted)
    ids, init_sizes = ids[keep], init_sizes[keep].copy()
    relabelled = nearest(centers[ids])[in_deleted]
    init_sizes += np.bincount(relabelled, minlength=len(ids))
    init_labels = init_labels.copy()
    for c in deleted[::-1]:
        init_labels[init_labels > c] -= 1
    init_labels[in_deleted] = relabelled
    return init_labels, init_sizes, ids


def test_the_dying_rule_keeps_the_reference_codes_books():
    """Over epochs of moving points, the active set and C⁰ equal the public
    code's compacted bookkeeping (DEC/DKM: sizes from the nearest active center)."""
    method = methods.get_method(config_lib.make_config("unseen_dec", "digits"))
    rng = np.random.default_rng(2)
    k, n = 8, 400
    centers = rng.normal(scale=4, size=(k, 2)).astype(np.float32)

    def points(weights):
        which = rng.choice(k, size=n, p=weights)
        return (centers[which] + rng.normal(size=(n, 2))).astype(np.float32)

    z = points(np.full(k, 1 / k))
    labels = np.asarray(nearest_center(jnp.asarray(z), jnp.asarray(centers)))
    extras = method.init(jnp.asarray(z), jnp.asarray(centers), jnp.asarray(labels))
    active = jnp.ones(k, bool)
    ref_labels, ref_sizes, ids = labels.copy(), np.bincount(labels, minlength=k), np.arange(k)
    deaths = 0
    for epoch in range(1, 8):
        z = points(rng.dirichlet(np.full(k, 0.7)))
        extras, _, active = method.end_epoch(EpochEnd(jnp.asarray(z), jnp.asarray(centers), active, extras,
                                                      jnp.int32(epoch), jax.random.PRNGKey(0)))
        ref_labels, ref_sizes, ids = reference_code_epoch_end(ref_labels, ref_sizes, ids, z, centers, 0.5)
        np.testing.assert_array_equal(np.flatnonzero(np.asarray(active)), ids)
        ours = np.asarray(extras["unseen"]["reference_labels"])
        np.testing.assert_array_equal(ours, ids[ref_labels])
        np.testing.assert_array_equal(np.bincount(ours, minlength=k)[ids], ref_sizes)
        deaths = k - len(ids)
    assert 2 <= deaths < k - 1   # the rule was exercised, and not to the end


def test_dcn_reassigns_every_point_after_a_removal_and_the_reference_code_leaves_counts_unpruned():
    cfg = config_lib.make_config("unseen_dcn", "digits")
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(size=(60, 2)), jnp.float32)
    centers = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
    method = methods.get_method(cfg)
    extras = method.init(z, centers, nearest_center(z, centers))
    # the running labels say cluster 1 lost almost everything (and 0 gained it)
    running = jnp.where(extras["labels"] == 1, 0, extras["labels"])
    counts = jnp.asarray([101.0, 102.0, 103.0, 104.0, 105.0])
    extras = {**extras, "labels": running, "counts": counts}
    end = EpochEnd(z, centers, jnp.ones(5, bool), extras, jnp.int32(1), jax.random.PRNGKey(0))
    new, _, active = method.end_epoch(end)
    assert not bool(active[1]) and int(active.sum()) == 4
    np.testing.assert_array_equal(new["labels"], nearest_center(z, centers, active))
    np.testing.assert_array_equal(new["counts"], counts)          # the paper: each center keeps its count
    cfg.unseen.reference_code = True
    new, _, _ = methods.get_method(cfg).end_epoch(end)
    # the code's list is not pruned: the survivors 0, 2, 3, 4 read positions 0, 1, 2, 3
    np.testing.assert_array_equal(new["counts"], [101.0, 102.0, 102.0, 103.0, 104.0])


def test_unpruned_counts_follow_the_list_over_two_removals():
    counts = jnp.arange(6, dtype=jnp.float32) + 100
    listed = list(np.asarray(counts))                  # the reference code's list, by position
    before, after = jnp.ones(6, bool), jnp.asarray([1, 0, 1, 1, 0, 1], bool)
    counts = unpruned_counts(counts, before, after)
    np.testing.assert_array_equal(np.asarray(counts)[np.asarray(after)], listed[:4])
    counts = counts.at[jnp.asarray([2, 5])].add(7)      # compact labels 1 and 3 got points: positions 1, 3
    listed[1] += 7
    listed[3] += 7
    again = jnp.asarray([1, 0, 0, 1, 0, 1], bool)
    counts = unpruned_counts(counts, after, again)
    np.testing.assert_array_equal(np.asarray(counts)[np.asarray(again)], listed[:3])


def test_masked_scores_equal_sklearns_on_the_surviving_clusters():
    rng = np.random.default_rng(4)
    k = 9
    active = np.ones(k, bool)
    active[[1, 4, 7]] = False
    alive = np.flatnonzero(active)
    labels = rng.choice(alive[:-1], size=300)            # the last active cluster is empty
    z = rng.normal(size=(300, 4)).astype(np.float32) + labels[:, None] * 0.3
    y = rng.integers(0, 4, size=300)
    jz, jl, ja = jnp.asarray(z), jnp.asarray(labels, jnp.int32), jnp.asarray(active)
    ours = metrics.label_free_scores(jz, jl, k, active=ja)
    assert float(ours["silhouette"]) == pytest.approx(skm.silhouette_score(z, labels), rel=1e-5)
    assert float(ours["calinski_harabasz"]) == pytest.approx(skm.calinski_harabasz_score(z, labels), rel=1e-5)
    assert float(ours["davies_bouldin"]) == pytest.approx(skm.davies_bouldin_score(z, labels), rel=1e-5)
    sizes = np.bincount(labels, minlength=k)[alive] / 300
    entropy = -np.sum(sizes[sizes > 0] * np.log(sizes[sizes > 0]))
    assert float(ours["size_entropy"]) == pytest.approx(entropy / np.log(len(alive)), rel=1e-5)
    assert float(ours["n_empty_clusters"]) == 1.0       # the active empty one; dead ones are not empty ones
    compact = np.searchsorted(alive, labels)            # the same partition with the survivors renumbered
    plain = metrics.label_free_scores(jz, jnp.asarray(compact, jnp.int32), len(alive))
    for name in ("size_entropy", "n_empty_clusters", "n_tiny_clusters", "silhouette"):
        assert float(ours[name]) == pytest.approx(float(plain[name]), rel=1e-5), name
    probs = jnp.asarray(np.where(active, rng.dirichlet(np.ones(k), size=300), 0.0), jnp.float32)
    probs = probs / probs.sum(1, keepdims=True)
    assert float(metrics.mean_assignment_entropy(probs, True, ja)) == pytest.approx(
        float(metrics.mean_assignment_entropy(probs[:, alive], True)), rel=1e-5)
    scores = metrics.label_based_scores(jnp.asarray(y), jl, k, n_classes=4)
    assert float(scores["nmi"]) == pytest.approx(skm.normalized_mutual_info_score(y, labels), abs=1e-6)
    assert float(scores["ari"]) == pytest.approx(skm.adjusted_rand_score(y, labels), abs=1e-6)
    assert float(scores["acc"]) == pytest.approx(
        float(metrics.cluster_accuracy(jnp.asarray(y), jnp.asarray(compact), len(alive), 4)), abs=1e-7)


@pytest.mark.parametrize("change, message", [
    ({"unseen.k_init": 1}, "k_init must be at least 2"),
    ({"unseen.k_init": 601}, "more than the 600 samples"),
    ({"unseen.t": 0.0}, r"in \(0, 1\)"),
    ({"unseen.t": 1.0}, r"in \(0, 1\)"),
    ({"algorithm": "idec"}, "UNSEEN works with dcn, dec, dkm"),
])
def test_bad_input_is_refused_before_any_compute(tmp_path, change, message):
    cfg = unseen_config()
    for key, value in change.items():
        section, _, leaf = key.rpartition(".")
        (cfg[section] if section else cfg)[leaf] = value
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(cfg, tmp_path)
    assert not (tmp_path / "pretrain").exists()
    with pytest.raises(ValueError, match="UNSEEN works with"):
        methods.get_method(config_lib.make_config("unseen_ae_kmeans", "digits"))


# ---------------------------------------------------------------- the loop

def test_a_removal_in_one_seed_leaves_the_other_seeds_of_a_vmapped_launch_bitwise_untouched():
    cfg = unseen_config(seed_parallelism="vmap", clustering_epochs=3, pretrain_epochs=1)
    ds = data.load_dataset(cfg.dataset)
    trainer = train.make_train(cfg, *ds.x.shape, ds.n_clusters)
    x = jnp.asarray(ds.x)
    first = trainer.train(jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(7)]), x)
    second = trainer.train(jnp.stack([jax.random.PRNGKey(3), jax.random.PRNGKey(7)]), x)
    removed = [np.asarray(run[2]["active"][0]).sum(-1) for run in (first, second)]
    assert removed[0][-1] < 10 and not np.array_equal(removed[0], removed[1])   # the other seeds differ
    for a, b in zip(leaves(first[1]), leaves(second[1])):
        np.testing.assert_array_equal(a[1], b[1])
    for name in ("assignments", "active"):
        np.testing.assert_array_equal(first[2][name][1], second[2][name][1])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unseen") / "reference"
    return workdir, train.train_and_evaluate(unseen_config(), workdir)


def test_records_snapshots_and_summary_say_how_many_clusters_are_alive(reference_run):
    workdir, summary = reference_run
    alive = [r["active_clusters"] for r in checkpointing.load_records(workdir, "clustering")]
    assert len(alive) == 4 and alive[-1][0] < 10 and all(a >= b for a, b in zip(alive, alive[1:]))
    final = checkpointing.load_snapshot(workdir, 4)
    assert final["active"].shape == (1, 10) and int(final["active"].sum()) == alive[-1][0]
    assert set(np.unique(final["assignments"])) <= set(np.flatnonzero(final["active"][0]))
    assert summary["algorithm"] == "unseen_dec" and summary["seeds"][0]["n_clusters"] == alive[-1][0]
    assert len(set(np.asarray(summary["seeds"][0]["cluster_sizes"]).nonzero()[0])) <= alive[-1][0]
    table = evaluate.evaluate_run(workdir, progress=False)
    clustering = table[table.phase == "clustering"].sort_values("epoch")
    assert clustering.n_active_clusters.tolist() == [10.0] + [float(a[0]) for a in alive]
    assert clustering.n_empty_clusters.max() < 10 - alive[-1][0] + 1


def test_a_run_killed_after_clusters_died_resumes_to_the_uninterrupted_result(reference_run, tmp_path):
    reference, summary = reference_run
    killed = tmp_path / "killed"
    shutil.copytree(reference, killed)
    # killed after epoch 3 was written, before the resume point of the last epoch (4):
    # it resumes from epoch 2, after clusters had died, and replays 3 and 4
    for epoch in (3, 4):
        shutil.rmtree(killed / "clustering" / "resume" / str(epoch), ignore_errors=True)
    shutil.rmtree(checkpointing.epoch_dir(killed, 4))   # epoch 4's snapshot, whatever the layout
    (killed / "summary.json").unlink()
    assert checkpointing.list_epochs(killed, "clustering", "resume")[-1] == 2   # the newest left
    assert checkpointing.load_records(reference, "clustering")[1]["active_clusters"][0] < 10
    assert train.train_and_evaluate(unseen_config(), killed) == summary
    for u, v in zip(leaves(checkpointing.load_state(killed, 4, kind="resume")),
                    leaves(checkpointing.load_state(reference, 4, kind="resume"))):
        np.testing.assert_array_equal(u, v)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in checkpointing.load_records(killed, "clustering")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in checkpointing.load_records(reference, "clustering")]


def test_the_reference_codes_dec_stops_learning_its_centers_at_the_first_removal():
    cfg = unseen_config(**{"unseen.reference_code": True, "clustering_epochs": 3})
    ds = data.load_dataset(cfg.dataset)
    trainer = train.make_train(cfg, *ds.x.shape, ds.n_clusters)
    x, keys = jnp.asarray(ds.x), train.seed_keys(cfg)
    pstate = trainer.init_pretrain(keys)
    for _ in range(cfg.pretrain.epochs):
        pstate, _ = trainer.pretrain_epoch(pstate, x)
    state, _ = trainer.init_clustering(pstate["params"], keys, x)
    centers, alive = [np.asarray(state["params"]["centers"])], [10]
    for _ in range(3):
        state, _ = trainer.cluster_epoch(state, x)
        centers.append(np.asarray(state["params"]["centers"]))
        alive.append(int(np.asarray(state["active"]).sum()))
    first = next(e for e, a in enumerate(alive) if a < 10)   # the epoch of the first removal
    assert 1 <= first <= 2 and bool(state["extras"]["unseen"]["frozen"][0])
    assert not np.array_equal(centers[first - 1], centers[first])       # learning until then
    for later in centers[first + 1:]:
        np.testing.assert_array_equal(later, centers[first])            # frozen from then on
