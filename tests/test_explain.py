"""dcjax.explain: DDC's ILP satisfies its constraints and is optimal on small
cases; TC and ITF match a hand computation; a planted partition's tag sets are
recovered by the ILP and not by top-k; an infeasible alpha is one line naming
the cluster; the command line explains a run from its config and chosen labels."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from dcjax import explain as ex


def test_tc_and_itf_on_a_hand_computed_example():
    # cluster 0 explained by tags 0 and 1, cluster 1 by tags 1 and 2
    w = np.array([[1, 1, 0], [0, 1, 1]], bool)
    q = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 0.75]])
    # TC: mean frequency of the chosen tags; ITF: mean log(K / clusters using the tag)
    np.testing.assert_allclose(ex.tag_coverage(w, q), [0.75, 0.625])
    np.testing.assert_allclose(ex.inverse_tag_frequency(w), [np.log(2) / 2, np.log(2) / 2])
    # Q from the rows: 4 members in cluster 0, 4 in cluster 1
    tags = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0],
                     [0, 1, 1], [0, 0, 1], [0, 1, 1], [0, 0, 0]], np.float32)
    _, sizes, q2 = ex.cluster_frequencies(np.repeat([0, 1], 4), tags)
    np.testing.assert_allclose(q2, q)
    assert list(sizes) == [4, 4]


@pytest.mark.parametrize("seed", range(4))
def test_ilp_meets_coverage_and_overlap_and_uses_fewest_tags(seed):
    rng = np.random.default_rng(seed)
    q = rng.random((2, 5))
    alpha = 0.6 * q.sum(1).min()
    w, beta = ex.ilp_explanations(q, alpha)
    assert ((w * q).sum(1) >= alpha - 1e-9).all()          # coverage, every cluster
    assert ((w * q).sum(0) <= beta + 1e-9).all()            # overlap, every tag
    # no W with fewer tags meets both at this beta (brute force over 2^10)
    fewest = min(sum(bits) for bits in itertools.product([0, 1], repeat=q.size)
                 if ((np.reshape(bits, q.shape) * q).sum(1) >= alpha - 1e-9).all()
                 and ((np.reshape(bits, q.shape) * q).sum(0) <= beta + 1e-9).all())
    assert w.sum() == fewest
    # and beta is the smallest step that admits a solution
    if beta > ex.BETA_STEP:
        with pytest.raises(ex.ExplainError):
            ex.ilp_explanations(q, alpha, beta - ex.BETA_STEP)


def test_a_given_beta_is_respected():
    labels, tags, names, _ = ex.planted(seed=1)
    _, _, q = ex.cluster_frequencies(labels, tags)
    w, beta = ex.ilp_explanations(q, 1.6, beta=1.5)
    assert beta == 1.5 and ((w * q).sum(0) <= 1.5 + 1e-9).all() and ((w * q).sum(1) >= 1.6 - 1e-9).all()


@pytest.mark.parametrize("seed", range(3))
def test_planted_tag_sets_are_recovered_by_the_ilp_not_by_topk(seed):
    labels, tags, names, planted = ex.planted(seed=seed)
    df = ex.explain(labels, tags, names, alpha=1.6, top_k=2)
    got = {m: {c: sorted(g.tag) for c, g in d.groupby("cluster")} for m, d in df.groupby("method")}
    want = {c: sorted(v) for c, v in planted.items()}
    assert got["ilp"] == want
    assert got["topk"] != want   # the shared tags are commoner than any cluster's own
    s = ex.summary(df)
    assert s.loc["ilp", "itf"] == pytest.approx(np.log(4))
    assert s.loc["topk", "itf"] < np.log(4) - 0.5


def test_an_infeasible_alpha_is_one_line_naming_the_cluster():
    labels = np.repeat([0, 1, 2], 5)
    tags = np.zeros((15, 3), np.float32)
    tags[:10, 0] = 1          # clusters 0 and 1 carry tag 0 ...
    tags[:10, 1] = 1          # ... and tag 1; cluster 2 only tag 2, in 2 of its 5 members
    tags[10:12, 2] = 1
    with pytest.raises(ex.ExplainError) as e:
        ex.explain(labels, tags, alpha=1.0)
    message = str(e.value)
    assert "\n" not in message and "cluster 2 (5 members)" in message and "0.4" in message


def test_infeasible_alpha_from_the_command_line_is_one_line(tmp_path, capsys):
    workdir = _fake_run(tmp_path)
    with pytest.raises(SystemExit) as e:
        ex.main(["--workdir", str(workdir), "--alpha", "1000"], prog="dcjax explain")
    said = capsys.readouterr().err
    assert e.value.code == 2 and said.startswith("dcjax explain: error: alpha=1000 is infeasible: cluster ")
    assert said.count("\n") == 1


def test_derived_tags_are_named_quantile_bins():
    x = np.c_[np.arange(30.0), np.tile([0.0, 1.0], 15), np.ones(30)]
    tags, names = ex.derive_tags(x, ["a", "b", "c"], bins=3)
    assert names == ["a: low", "a: medium", "a: high", "b: low", "b: high"]   # c is constant: no tag
    assert tags.shape == (30, 5) and (tags.sum(1) == 2).all()
    assert tags[:10, 0].all() and tags[20:, 2].all()


def test_tags_from_a_csv_and_from_tag_columns(tmp_path):
    frame = pd.DataFrame({"x1": [0.1, 0.2, 0.3], "striped": [1, 0, 1], "x2": [1.0, 2.0, 3.0], "big": [0.5, 1, 0]})
    frame[["striped", "big"]].to_csv(tmp_path / "tags.csv", index=False)
    tags, names = ex.load_tags(tmp_path / "tags.csv")
    assert names == ["striped", "big"] and tags.shape == (3, 2)
    frame.to_csv(tmp_path / "data.csv", index=False)
    tags2, names2 = ex.split_tag_columns(tmp_path / "data.csv", "striped, big")
    np.testing.assert_array_equal(tags, tags2)
    frame.assign(big=[2, 0, 0]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ex.ExplainError, match="must be in \\[0, 1\\]"):
        ex.load_tags(tmp_path / "bad.csv")


def _fake_run(tmp_path):
    """A workdir as select leaves it, without training: config.json and
    selected_labels.npy (the digits' true classes as the partition)."""
    from tests.conftest import tiny_config

    workdir = tmp_path / "run"
    workdir.mkdir()
    config = tiny_config()
    (workdir / "config.json").write_text(config.to_json())
    from dcjax import data
    np.save(workdir / "selected_labels.npy", data.load_dataset(config.dataset).y)
    return workdir


def test_command_line_explains_a_run(tmp_path, capsys):
    workdir = _fake_run(tmp_path)
    df = ex.main(["--workdir", str(workdir), "--bins", "2", "--alpha", "2"])
    out = capsys.readouterr().out
    assert "derived: 2 quantile bins" in out and (workdir / "explanations.csv").exists()
    table = pd.read_csv(workdir / "explanations.csv")
    assert set(table.method) == {"ilp", "topk"} and table.cluster.nunique() == 10
    assert (table.purity == 1).all()   # the partition is the labels
    assert ((table[table.method == "ilp"].groupby("cluster").frequency.sum()) >= 2 - 1e-9).all()
    # tags from a file are aligned with the subsampled rows the run trained on
    from dcjax import data
    config = json.loads((workdir / "config.json").read_text())
    full = data.load_dataset(dict(config["dataset"]) | {"subsample": 0})
    np.save(tmp_path / "tags.npy", np.eye(10, dtype=np.float32)[full.y])   # tag c: "is class c"
    df = ex.main(["--workdir", str(workdir), "--tags", str(tmp_path / "tags.npy"), "--method", "ilp"])
    assert (df.frequency == 1).all() and (df.tag == df.cluster.map(lambda c: f"tag {c}")).all()


def test_estimator_explains_its_labels_and_the_report_has_the_section(tmp_path):
    """DEC fitted on wine (a DataFrame: its columns name the derived tags);
    `explain` matches the library call on `labels_`; the report of the same
    run (kept in workdir) holds the explanation section."""
    from sklearn.datasets import load_wine

    from dcjax import DEC, report

    wine = load_wine(as_frame=True)
    model = DEC(n_clusters=3, pretrain_epochs=3, clustering_epochs=2, hidden_dims=(32, 32), batch_size=64,
                kmeans_n_init=2, progress=False, workdir=str(tmp_path / "run")).fit(wine.data)
    df = model.explain(X=wine.data, y=wine.target, alpha=2)
    tags, names = ex.derive_tags(wine.data.to_numpy(), wine.data.columns)
    pd.testing.assert_frame_equal(df, ex.explain(model.labels_, tags, names, y=wine.target, alpha=2))
    assert df.tag.str.contains(": ").all() and df.tag.str.split(": ").str[0].isin(wine.data.columns).all()
    with pytest.raises(ValueError, match="give tags, or X"):
        model.explain()
    page = report.write_report(tmp_path / "run", progress=False, umap=False).read_text()
    assert "What each cluster means (tags)" in page and "derived: 3 quantile bins" in page


# ---------------------------------------------------------------- tag supervision in training

def _run_pure(cfg):
    import jax.numpy as jnp

    from dcjax import data, train

    ds = data.load_dataset(cfg.dataset)
    trainer = train.make_train(cfg, *ds.x.shape, ds.n_clusters)
    return trainer.train(train.seed_keys(cfg), jnp.asarray(ds.x))


def _leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def digit_tags(tmp_path_factory):
    """A per-class tag file for all 1797 digits (tags: 'is class c', plus
    noise), as AwA gives every image its class's attributes."""
    from sklearn.datasets import load_digits

    y = load_digits().target
    rng = np.random.default_rng(0)
    tags = np.c_[np.eye(10)[y], rng.random((len(y), 3)) < 0.5].astype(np.float32)
    path = tmp_path_factory.mktemp("tags") / "tags.npy"
    np.save(path, tags)
    return str(path)


def test_tag_head_off_trains_bit_identically(digit_tags):
    """tags.weight = pairwise_weight = 0 with a tag file set is the run without
    the option: no head, the same parameters to the bit; weight > 0 adds the
    head and changes the autoencoder (so the comparison can fail)."""
    from tests.conftest import tiny_config

    plain = _run_pure(tiny_config("dec"))
    off = _run_pure(tiny_config("dec", **{"tags.file": digit_tags}))
    assert "tag_head" not in off[1]["params"]["ae"]
    for a, b in zip(_leaves((plain[0]["params"], plain[1]["params"])), _leaves((off[0]["params"], off[1]["params"]))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(plain[2]["assignments"], off[2]["assignments"])
    on = _run_pure(tiny_config("dec", **{"tags.file": digit_tags, "tags.weight": 0.5}))
    assert on[1]["params"]["ae"]["tag_head"]["kernel"].shape == (1, 10, 13)
    assert not np.array_equal(on[1]["params"]["ae"]["encoder_0"]["kernel"],
                              plain[1]["params"]["ae"]["encoder_0"]["kernel"])


@pytest.mark.parametrize("algorithm", ["dec", "deccs"])
def test_tag_losses_are_logged_and_finite(tmp_path, digit_tags, algorithm):
    """Both options through train_and_evaluate: the records carry 'tags' (both
    phases) and 'pairwise' (clustering), finite; DECCS + tags is the thesis's method."""
    from dcjax import checkpointing, train
    from tests.conftest import tiny_config

    cfg = tiny_config(algorithm, clustering_epochs=2,
                      **{"tags.file": digit_tags, "tags.weight": 0.5, "tags.pairwise_weight": 1.0})
    train.train_and_evaluate(cfg, tmp_path / "run")
    pre = checkpointing.load_records(tmp_path / "run", "pretrain")
    clu = [r for r in checkpointing.load_records(tmp_path / "run", "clustering") if "loss" in r]
    assert "tags" in pre[-1]["loss"] and {"tags", "pairwise"} <= set(clu[-1]["loss"])
    assert all(np.isfinite(np.asarray(v, float)).all() for r in clu for v in r["loss"].values())


def test_tag_supervision_without_tags_is_refused():
    from dcjax import config as config_lib
    from tests.conftest import tiny_config

    with pytest.raises(config_lib.ConfigError, match="need tags"):
        config_lib.validate(tiny_config("dec", **{"tags.weight": 0.5}))


def test_partners_follow_ddc_eq5():
    """The partner is alike in the masked tags and apart in f; masked-out tags do not count."""
    import jax.numpy as jnp

    from dcjax import tags as tags_lib

    t = jnp.array([[1, 0, 1], [1, 0, 0], [0, 1, 1], [1, 0, 1]], jnp.float32)
    f = jnp.array([[0.0], [0.1], [0.2], [5.0]])
    # J = 100 |t_i - t_j| - |f_i - f_j|: row 3 is row 0's twin in tags and far in f, so rows 0-2
    # (one tag from it at most, or the least far) pair with it, and it with row 0 (J = -5)
    assert [int(p) for p in tags_lib.partners(t, f, 100.0)] == [3, 3, 3, 0]
    masked = t * jnp.array([1.0, 1.0, 0.0])                          # tag 2 not in any explanation
    assert [int(p) for p in tags_lib.partners(masked, f, 100.0)] == [3, 3, 3, 0]
    assert int(tags_lib.partners(t, f, 100.0)[1]) == int(tags_lib.partners(masked, f, 100.0)[1])
    f2 = jnp.array([[0.0], [9.0], [0.2], [5.0]])                    # row 1 now the farthest from row 0 ...
    assert int(tags_lib.partners(t, f2, 100.0)[0]) == 3              # ... but one tag away: row 3 still
    assert int(tags_lib.partners(masked, f2, 100.0)[0]) == 1         # masked, rows 1 and 3 tie in tags: the farther


def test_a_run_with_too_many_features_to_derive_tags_from_is_one_line(tmp_path, capsys):
    from dcjax import data

    workdir = _fake_run(tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    x = np.random.default_rng(0).random((50, ex.MAX_DERIVED_FEATURES + 1)).astype(np.float32)
    np.save(tmp_path / "wide.npy", x)
    config["dataset"] |= {"name": str(tmp_path / "wide.npy"), "subsample": 0, "n_clusters": 2}
    (workdir / "config.json").write_text(json.dumps(config))
    np.save(workdir / "selected_labels.npy", np.arange(50) % 2)
    with pytest.raises(SystemExit) as e:
        ex.main(["--workdir", str(workdir)])
    said = capsys.readouterr().err
    assert e.value.code == 2 and "too many to explain clusters by bins" in said and said.count("\n") == 1
    assert len(data.load_dataset(config["dataset"]).x) == 50


def test_tag_columns_are_tags_not_features(tmp_path):
    """dataset.tag_columns: those columns leave the features (data.py) and are
    the run's tags (explain), named by the header."""
    from dcjax import data
    from tests.conftest import tiny_config

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    frame = pd.DataFrame({"a": rng.normal(y * 3.0), "b": rng.normal(size=40), "kind": np.where(y, "p", "q"),
                          "sweet": y.astype(float), "dry": 1.0 - y})
    frame.to_csv(tmp_path / "t.csv", index=False)
    config = tiny_config(**{"dataset.name": str(tmp_path / "t.csv"), "dataset.subsample": 0,
                            "dataset.label_column": "kind", "dataset.tag_columns": "sweet,dry"})
    assert data.load_dataset(config.dataset).x.shape == (40, 2)
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(config.to_json())
    np.save(workdir / "selected_labels.npy", y)
    df = ex.explain_run(workdir, methods=("ilp",))
    assert df.attrs["tags"] == f"columns sweet, dry of {tmp_path / 't.csv'}"
    assert dict(zip(df.cluster, df.tag)) == {0: "dry", 1: "sweet"} and (df.purity == 1).all()
    assert ex.run_data(workdir)[3] == ["a", "b"]   # feature names from the header, less label and tags
