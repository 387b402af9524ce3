"""The scikit-learn estimators: parameters (defaults = the configs), clone and
Pipeline; the same numbers as the command line on the same data and seed;
the fitted attributes; AE+k-means through a temporary workdir."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dcjax import checkpointing, config as config_lib, estimators, launch, select
from dcjax import AEKMeans, DCN, DEC, DECCS, DKM, IDEC, UnseenDEC

REPO = Path(__file__).resolve().parent.parent
X, _ = make_blobs(n_samples=150, n_features=5, centers=3, random_state=0)
TINY = dict(pretrain_epochs=2, clustering_epochs=3, batch_size=32, hidden_dims=(16, 16, 32), embedding_dim=4,
            kmeans_n_init=2)
SEED, SEEDS = 3, 2


# ------------------------------------------------------------ parameters, no training

@pytest.mark.parametrize("cls", [AEKMeans, DEC, IDEC, DCN, DKM, DECCS])
def test_parameters_default_to_the_config_and_clone(cls):
    config = config_lib.make_config(cls.algorithm, "digits")
    params = cls().get_params()
    for name, field in cls._fields().items():
        assert params[name] == estimators._get(config, field), name
    assert {"n_clusters", "n_seeds", "random_state", "workdir", "selector"} <= set(params)
    assert params["pretrain_epochs"] == 100 and params["hidden_dims"] == (500, 500, 2000)
    model = cls(n_clusters=4, n_seeds=3, random_state=7, pretrain_epochs=5)
    twin = clone(model)
    assert twin is not model and twin.get_params() == model.get_params()
    assert model.set_params(batch_size=64) is model and model.batch_size == 64
    assert repr(model).startswith(cls.__name__)


def test_each_algorithm_has_its_own_hyperparameters():
    assert {"alpha", "target", "gamma"} <= set(IDEC().get_params()) and "gamma" not in DEC().get_params()
    assert DKM().alpha == 1000.0 and DEC().alpha == 1.0 and DCN().lambda_clust == 0.05
    assert "clustering_epochs" not in AEKMeans().get_params()
    assert set(estimators.ESTIMATORS) == set(config_lib.NAMED_ALGORITHMS)


def test_a_new_algorithm_is_two_lines(monkeypatch):
    monkeypatch.setattr(config_lib, "ALGORITHMS", (*config_lib.ALGORITHMS, "dkm2"))
    original = config_lib.make_config

    def make_config(algorithm, dataset, arg=None):   # a new algorithm with a config section of its own
        c = original("dkm" if algorithm == "dkm2" else algorithm, dataset, arg)
        if algorithm == "dkm2":
            c.algorithm = "dkm2"
            c.dkm2 = {"beta": 2.0}
        return c
    monkeypatch.setattr(config_lib, "make_config", make_config)

    class DKM2(estimators.DeepClusterer):
        algorithm = "dkm2"
    assert DKM2().beta == 2.0 and clone(DKM2(beta=3.0)).beta == 3.0


def test_bad_parameters_are_refused_before_training():
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 2"):
        DKM().fit(X)
    with pytest.raises(ValueError, match=r"DKM: pretrain_epochs=-1 is invalid"):
        DKM(n_clusters=3, pretrain_epochs=-1).fit(X)
    with pytest.raises(ValueError, match=r"clustering_learning_rate=0 is invalid"):
        DKM(n_clusters=3, clustering_learning_rate=0).fit(X)
    with pytest.raises(ValueError, match=r"n_seeds=0 is invalid"):
        DKM(n_clusters=3, n_seeds=0).fit(X)
    with pytest.raises(ValueError, match=r"pretrain_epochs=2.5 is not of the type of its default 100"):
        DKM(n_clusters=3, pretrain_epochs=2.5).fit(X)
    with pytest.raises(ValueError, match="unknown selector"):
        DKM(n_clusters=3, selector="best").fit(X)
    with pytest.raises(ValueError, match="unknown launch_selector 'best'"):
        DKM(n_clusters=3, launch_selector="best").fit(X)
    with pytest.raises(ValueError, match="NaN"):
        DKM(n_clusters=3).fit(np.where(X > 5, np.nan, X))
    with pytest.raises(ValueError, match="one cluster is no clustering"):   # refused on purpose
        DKM(n_clusters=1).fit(X)


def test_bad_data_is_named_x_not_a_temporary_file():
    """Before: a one-row X was refused naming <tmp>/data.npy, a file the user never made."""
    with pytest.raises(ValueError, match=r"Found array with 1 sample\(s\) \(shape=\(1, 5\)\) while a minimum of 2"):
        DKM(n_clusters=3).fit(X[:1])
    for bad, match in [(X[:5], r"^5 samples for 3 clusters is fewer than 2 per cluster"),
                       (np.ones((20, 5)), r"^X: all 20 rows are identical"),
                       (np.where(X > 5, 1e300, X), r"^X: row \d+, column \d+ \(0-based\) is 1e\+300, beyond float32")]:
        with pytest.raises(ValueError, match=match) as refused:
            DKM(n_clusters=3, **TINY).fit(bad)
        assert "data.npy" not in str(refused.value)


def test_one_seed_is_its_own_launch_choice():
    a = np.array([0, 0, 1, 1, 2, 2])
    index, labels, choice = estimators.launch_choice(None, {"seeds": [{"seed": 7, "epoch": 3}]}, a[None])
    assert index == 0 and choice is None
    np.testing.assert_array_equal(labels, a)


def test_importing_the_package_stays_light():
    code = ("import sys, dcjax, dcjax.train, dcjax.config; "
            "assert 'dcjax.selection' not in sys.modules and 'dcjax.estimators' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------------ one fit, one CLI run

@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A Pipeline(StandardScaler, DKM) fitted with 2 seeds, and the CLI on a
    CSV of the scaled data with the same seed and settings, from a folder
    outside the repository: (pipeline, estimator workdir, CLI workdir)."""
    root = tmp_path_factory.mktemp("same")
    pipe = make_pipeline(StandardScaler(), DKM(n_clusters=3, n_seeds=SEEDS, random_state=SEED,
                                               workdir=root / "estimator", **TINY)).fit(X)
    scaled = StandardScaler().fit_transform(X)
    np.savetxt(root / "scaled.csv", scaled, delimiter=",", fmt="%.17g",
               header=",".join(f"f{j}" for j in range(X.shape[1])), comments="")
    args = ["--config", "dkm", "--config.dataset.name=scaled.csv", "--config.dataset.n_clusters=3",
            f"--config.seed={SEED}", f"--config.seeds={SEEDS}", "--config.pretrain.epochs=2",
            "--config.clustering.epochs=3", "--config.batch_size=32", "--config.model.hidden_dims=(16, 16, 32)",
            "--config.model.embedding_dim=4", "--config.kmeans.n_init=2", "--noconfig.progress",
            "--workdir", "cli"]
    done = subprocess.run([sys.executable, "-m", "dcjax.main", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "python -m dcjax.select --workdir cli" in done.stdout
    return pipe, root / "estimator", root / "cli"


def test_estimator_and_command_line_give_the_same_numbers(fitted, monkeypatch):
    pipe, est_dir, cli_dir = fitted
    model = pipe[-1]
    monkeypatch.chdir(cli_dir.parent)   # outside the repository, with the shipped assessor
    result = select.main(["--workdir", "cli"])
    assert result["selector"] == "assessor_guarded" and result["assessor"].startswith("shipped")

    cli_config, est_config = (json.loads((d / "config.json").read_text()) for d in (cli_dir, est_dir))
    for c in (cli_config, est_config):   # provenance records the process (git revision, devices), no setting
        c["dataset"].pop("name"), c.pop("progress"), c.pop("provenance")
    assert cli_config == est_config
    for phase in ("pretrain", "clustering"):
        assert ([r["loss"] for r in checkpointing.load_records(cli_dir, phase)]
                == [r["loss"] for r in checkpointing.load_records(est_dir, phase)])
    assert [s["epoch"] for s in result["seeds"]] == model.selected_epoch_.tolist()
    cli_launch, est_launch = ({k: v for k, v in c.items() if k != "labels"} for c in (result["launch"], model.launch_))
    assert cli_launch == est_launch   # the same launch choice
    np.testing.assert_array_equal(np.load(cli_dir / "selected_labels.npy"), model.labels_)
    for i, epoch in enumerate(model.selected_epoch_):
        np.testing.assert_array_equal(checkpointing.load_snapshot(cli_dir, int(epoch))["assignments"][i],
                                      model.labels_per_seed_[i])
    final = checkpointing.load_snapshot(cli_dir, TINY["clustering_epochs"])["assignments"]
    np.testing.assert_array_equal(final, model.final_labels_per_seed_)


def test_fitted_attributes_and_pipeline_use(fitted):
    pipe, est_dir, _ = fitted
    model = pipe[-1]
    assert model.seeds_ == [SEED, SEED + 1] and model.seed_ in model.seeds_
    i = model.seeds_.index(model.seed_)
    # labels_ is the launch's choice (dcjax.launch), as selection.json and selected_labels.npy have it
    assert json.loads((est_dir / "selection.json").read_text())["launch"] == model.launch_
    # an array's cluster sizes are unknown (cluster_sizes='auto'): no rule that assumes even clusters
    assert model.get_params()["cluster_sizes"] == "auto" and model.launch_["cluster_sizes"] == "unknown"
    assert model.launch_["selector"] == launch.DEFAULT_UNEVEN_SELECTOR and "cluster_sizes" in model.launch_["why"]
    np.testing.assert_array_equal(model.labels_, np.load(est_dir / "selected_labels.npy"))
    if model.launch_["seed"] >= 0:
        np.testing.assert_array_equal(model.labels_, model.labels_per_seed_[i])
    np.testing.assert_array_equal(model.final_labels_, model.final_labels_per_seed_[i])
    assert model.labels_.shape == (len(X),) and set(model.labels_) <= {0, 1, 2}
    assert ((0 <= model.selected_epoch_) & (model.selected_epoch_ <= TINY["clustering_epochs"])).all()
    assert model.cluster_centers_.shape == (3, TINY["embedding_dim"])
    assert pipe.transform(X).shape == (len(X), TINY["embedding_dim"])
    assert np.mean(pipe.predict(X) == model.labels_) > 0.97   # the same rule on the training data
    history = model.history_
    assert len(history) == SEEDS * (TINY["clustering_epochs"] + 1)
    assert {"seed", "phase", "epoch", "loss_total", "silhouette", "pooled_silhouette"} <= set(history.columns)
    assert not {"acc", "nmi", "ari"} & set(history.columns)
    assert model.workdir_ == est_dir and (est_dir / "selection.json").exists()
    assert pipe.get_params()["dkm__alpha"] == 1000.0
    with pytest.raises(ValueError, match="X has 4 features, but DKM is expecting 5 features as input"):
        model.predict(X[:, :4])   # scikit-learn's own message (validate_data)


def test_launch_selector_parameter_reaches_the_launch_choice(fitted, tmp_path):
    """`launch_selector` is passed to `launch.select_launch`: on a copy of
    the fitted run, 'own_silhouette' chooses a seed and writes its labels."""
    pipe, est_dir, _ = fitted
    model = pipe[-1]
    assert model.get_params()["launch_selector"] is None
    shutil.copytree(est_dir, tmp_path / "run")
    index, labels, choice = estimators.launch_choice(tmp_path / "run", model.selection_, model.labels_per_seed_,
                                                     "own_silhouette")
    assert choice["selector"] == "own_silhouette" and choice["seed"] == model.seeds_[index]
    epoch = dict(zip(model.seeds_, model.selected_epoch_.tolist()))[choice["seed"]]
    assert choice["epoch"] == epoch
    np.testing.assert_array_equal(labels, model.labels_per_seed_[index])


def test_ae_kmeans_fit_predict_in_a_temporary_folder(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = AEKMeans(n_clusters=3, pretrain_epochs=3, **{k: v for k, v in TINY.items()
                                                         if k not in ("pretrain_epochs", "clustering_epochs")})
    labels = model.fit_predict(X)
    assert list(tmp_path.iterdir()) == [] and model.workdir_ is None   # the temporary run is gone
    np.testing.assert_array_equal(labels, model.labels_)
    assert model.selection_["phase"] == "pretrain" and 1 <= model.selected_epoch_[0] <= 3
    assert np.mean(model.predict(X) == labels) > 0.95


def test_unseen_needs_no_n_clusters_and_returns_the_surviving_clusters():
    """UNSEEN's estimator: k_init and t instead of n_clusters; labels_ are
    renumbered over the surviving centres, and predict uses only those."""
    assert "n_clusters" not in UnseenDEC().get_params() and UnseenDEC().k_init == 35
    with pytest.raises(ValueError, match="k_init"):
        UnseenDEC(k_init=1, **TINY).fit(X)
    model = UnseenDEC(k_init=8, n_seeds=2, random_state=SEED, clustering_epochs=6,
                      **{k: v for k, v in TINY.items() if k != "clustering_epochs"}).fit(X)
    assert 2 <= model.n_clusters_ <= 8 and model.cluster_centers_.shape == (model.n_clusters_, 4)
    assert sorted(np.unique(model.labels_)) == list(range(model.n_clusters_))
    assert model.labels_per_seed_.max() < 8 and model.predict(X).max() < model.n_clusters_
    # seeds that keep different numbers of clusters: the launch picks a seed, not a median-k consensus
    assert model.launch_["selector"] == launch.DEFAULT_UNKNOWN_K_SELECTOR and model.launch_["seed"] >= 0
    # the shipped assessor was not tested on held-out UNSEEN seeds: by default each seed keeps its final epoch,
    # and says why
    assert model.selection_["requested_selector"] == "default" and model.selection_["selector"] == "last"
    assert "not of unseen_dec" in model.selection_["default_because"]
    assert [s["epoch"] for s in model.selection_["seeds"]] == [6, 6]


# ------------------------------------------------------------ issue 30/32: scikit-learn's conventions, soft labels, save/load

def test_soft_assignments_sum_to_one_and_agree_with_predict(fitted):
    model = fitted[0][-1]   # DKM
    scaled = fitted[0][0].transform(X)
    proba = model.predict_proba(scaled)
    assert proba.shape == (len(X), model.n_clusters_)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-9)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(scaled))
    assert not hasattr(DCN(), "predict_proba") and not hasattr(AEKMeans(), "predict_proba")


@pytest.fixture(scope="module")
def fitted_on_frame(tmp_path_factory):
    """DEC fitted on a DataFrame, in a workdir of its own."""
    import pandas as pd
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    workdir = tmp_path_factory.mktemp("frame") / "run"
    return DEC(n_clusters=3, random_state=SEED, workdir=workdir, **TINY).fit(frame), frame


def test_feature_names_set_output_and_dec_soft_assignments(fitted_on_frame):
    model, frame = fitted_on_frame
    assert model.feature_names_in_.tolist() == list(frame.columns) and model.n_features_in_ == 5
    proba = model.predict_proba(frame)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-9)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(frame))
    z = clone(model).set_params().set_output(transform="pandas")   # unfitted clone: set_output is a setting
    assert z.get_params() == model.get_params()
    model.set_output(transform="pandas")
    try:
        out = model.transform(frame)
        assert list(out.columns) == [f"dec{j}" for j in range(TINY["embedding_dim"])]
        assert model.predict(frame).shape == (len(X),)   # predict is not changed by set_output
    finally:
        model.set_output(transform="default")
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame.rename(columns={"f0": "other"}))


def test_save_and_load_round_trip_without_pickle(fitted_on_frame, tmp_path):
    model, frame = fitted_on_frame
    folder = model.save()
    assert folder == model.workdir_ and (folder / estimators.SAVED_JSON).is_file()
    with np.load(folder / estimators.SAVED_ARRAYS, allow_pickle=False) as f:   # nothing pickled
        assert any(k.startswith("params/") for k in f.files)
    twin = estimators.DeepClusterer.load(folder)
    assert type(twin) is DEC and twin.get_params() == model.get_params()
    for name in ("labels_", "cluster_centers_", "selected_epoch_", "feature_names_in_"):
        np.testing.assert_array_equal(getattr(twin, name), getattr(model, name))
    np.testing.assert_array_equal(twin.transform(frame), model.transform(frame))
    np.testing.assert_array_equal(twin.predict_proba(frame), model.predict_proba(frame))
    assert twin.seed_ == model.seed_ and twin.selection_["phase"] == model.selection_["phase"]
    assert twin.history_.shape == model.history_.shape
    with pytest.raises(TypeError, match="holds a DEC, not a DKM"):
        DKM.load(folder)
    with pytest.raises(FileNotFoundError, match="no saved estimator"):
        DEC.load(tmp_path)


def test_fit_warns_when_the_seeds_agree_no_better_than_chance():
    """Uniform noise, 3 seeds: the chance verdict reaches estimator users as a warning."""
    noise = np.random.default_rng(0).random((150, 5))
    with pytest.warns(estimators.ChanceWarning, match="no better than chance") as caught:
        model = DKM(n_clusters=3, n_seeds=3, random_state=0, **TINY).fit(noise)
    assert issubclass(caught[0].category, UserWarning)
    assert model.chance_["looks_like_chance"] is True


def test_no_chance_warning_on_clustered_data(fitted):
    model = fitted[0][-1]
    assert model.chance_["looks_like_chance"] is False


def test_estimators_docstrings_follow_numpydoc():
    """Every parameter of every estimator is documented (numpydoc)."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    for cls in estimators.ESTIMATORS.values():
        doc = docscrape.ClassDoc(cls)
        documented = {p.name for p in doc["Parameters"]}
        assert set(cls().get_params()) <= documented, (cls.__name__, set(cls().get_params()) - documented)
        attributes = {p.name for p in doc["Attributes"]}
        assert {"labels_", "cluster_centers_", "n_features_in_", "history_", "chance_"} <= attributes, cls
