"""scikit-learn estimators: `DKM(n_clusters=3).fit(X)` runs what the command line runs.

    from dcjax import DKM
    model = DKM(n_clusters=3, n_seeds=3).fit(X)      # X: (n_samples, n_features)
    model.labels_, model.selected_epoch_, model.history_
    model.predict(X_new), model.transform(X_new)     # nearest centre; the embedding

`fit` is a thin layer over the library, step for step what
`python -m dcjax.main` and `python -m dcjax.select` do:
1. X goes to `<workdir>/data.npy` and the config is `make_config(algorithm,
   that file)` with the estimator's parameters (their defaults are the
   configs': the published protocol); `workdir=None` is a temporary folder,
   deleted after `fit`, a path keeps the checkpoints as the CLI writes them.
2. `train.train_and_evaluate` trains `n_seeds` seeds in one launch, seed ids
   random_state, random_state + 1, ... (the CLI's `seed`, `seeds`).
3. `selection.select_run` chooses one epoch per seed without labels, by
   default ('default') with the study's assessor shipped in the package,
   or the final epoch for an algorithm it never learned from (`selector`).
4. What the run wrote is read back: per seed, the selected epoch's
   clustering (`labels_per_seed_`, `selected_epoch_`), the last epoch's
   (`final_labels_per_seed_`), and per epoch the losses and label-free
   scores the selection read (`history_`).

scikit-learn's conventions: X is checked by `validate_data` (its messages,
`feature_names_in_`, `set_output(transform="pandas")`), and its estimator
checks pass but for the ones declared in tests/test_sklearn_checks.py.
DEC, IDEC and DKM have `predict_proba` (the method's soft assignment). `fit`
warns with a `ChanceWarning` when the seeds agree no better than on data
without clusters (`dcjax.chance`). `save()` writes estimator.json and
estimator.npz (no pickle) into the workdir or a folder; `DeepClusterer.load`
reads them back.

So the same X (as a file), seed and settings give the CLI's numbers
(tests/test_estimators.py asserts it). `random_state=None` means seed 0: a
run is reproducible unless asked otherwise.

With several seeds, `labels_` is the launch's choice (`launch_choice`, as
`python -m dcjax.select` makes it: by default the seed with the best
silhouette in every seed's embedding, as an array's cluster sizes are not
known to be even (`cluster_sizes='even'`: the seed with the most even sizes);
`launch_selector` for another of `launch.LAUNCH_SELECTORS`, such as
'consensus'; `launch_` says which and why), and `final_labels_`,
`transform`, `predict` are those of one seed, `seed_`: the chosen seed, or
the one closest to the consensus. `cluster_centers_` are the centres of
`labels_` in `seed_`'s embedding.

Data: X is z-scored per feature (the rule for tabular data, `normalize`),
with statistics of the X given to `fit`; new data in `transform`/`predict`
are scaled with the same statistics. `batch_size` is capped at the number of
samples, so small data sets run with the protocol's settings.

A new algorithm is two lines: a subclass naming its `algorithm` (a key of
`dcjax.methods.REGISTRY` and of `dcjax.config.ALGORITHMS`). Its own
hyperparameters are the fields of its config section(s), `sections`,
with the config's defaults.

UNSEEN (`UnseenDCN`, `UnseenDEC`, `UnseenDKM`) takes no `n_clusters`: it
starts from `k_init` clusters and lets clusters die. After `fit`,
`n_clusters_` is the number of clusters of `labels_`, renumbered
0 .. n_clusters_ - 1 in the order of `cluster_centers_` (the surviving
centres); the per-seed arrays keep the run's centre indices (0 .. k_init - 1),
as the checkpoints do.
"""
import inspect
import json
import shutil
import tempfile
import warnings
from io import StringIO
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import traverse_util
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from dcjax import checkpointing, config as config_lib, data, evaluate, launch, methods, selection, train
from dcjax import run as run_lib
from dcjax import workdir as workdir_lib
from dcjax.methods import deccs as deccs_method
from dcjax.models import make_autoencoder

# Parameter -> config field, shared by every algorithm. Defaults: the config's.
PROTOCOL = {
    "pretrain_epochs": "pretrain.epochs",
    "clustering_epochs": "clustering.epochs",
    "pretrain_learning_rate": "pretrain.learning_rate",
    "clustering_learning_rate": "clustering.learning_rate",
    "batch_size": "batch_size",
    "hidden_dims": "model.hidden_dims",
    "embedding_dim": "model.embedding_dim",
    "activation": "model.activation",
    "kmeans_n_init": "kmeans.n_init",
    "normalize": "dataset.normalize",
    "cluster_sizes": "dataset.cluster_sizes",
}
DATA_FILE = "data.npy"
SAVED_JSON, SAVED_ARRAYS = "estimator.json", "estimator.npz"   # `save`: no pickle


class ChanceWarning(UserWarning):
    """`fit`'s seeds agree no better than on data without clusters, or they
    agreed at the start of clustering and came apart (`dcjax.chance`): the
    clusters may be the method's, not the data's."""


def launch_choice(workdir, result: dict, labels_per_seed: np.ndarray,
                  selector: str | None = None) -> tuple[int, np.ndarray, dict | None]:
    """What `labels_` holds, and which seed's model serves `transform`,
    `predict` and `cluster_centers_`: with several seeds, the launch's choice
    of `python -m dcjax.select` (`launch.select_launch`, label-free; its
    default follows `cluster_sizes`: `launch.default_selector`).
    The model is the chosen seed's, or for a consensus the seed whose
    partition agrees best with it (ARI; ties: the first). One seed: its own.
    Returns (seed index, labels, the choice as selection.json has it)."""
    if len(labels_per_seed) == 1:
        return 0, labels_per_seed[0], None
    choice = launch.select_launch(workdir, result, selector)
    labels = np.load(Path(workdir) / "selected_labels.npy").astype(np.int64)
    if choice["seed"] >= 0:
        return [s["seed"] for s in result["seeds"]].index(choice["seed"]), labels, choice
    agreement = [adjusted_rand_score(labels, seed_labels) for seed_labels in labels_per_seed]
    return int(np.argmax(agreement)), labels, choice


def _get(c, field: str):
    for part in field.split("."):
        c = c[part]
    return c


def _set(c, field: str, value) -> None:
    *path, leaf = field.split(".")
    for part in path:
        c = c[part]
    c[leaf] = value


class DeepClusterer(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """Base of the estimators: a subclass sets `algorithm` (and `sections`,
    its config sections, when they are not just its name). Its `__init__`
    is made from the config: n_clusters, the run's settings, `PROTOCOL`'s
    parameters and the fields of `sections`, each defaulting to the config's
    value, so that `get_params`, `set_params` and `clone` see them all."""
    algorithm: str = ""
    sections: tuple[str, ...] | None = None
    unused: tuple[str, ...] = ()   # PROTOCOL parameters the algorithm has no use for
    fixed: tuple[str, ...] = ()    # config fields of its sections that are not parameters
    k_parameter = "n_clusters"     # the parameter that sets the data's k (UNSEEN: its bound k_init)
    centers_are_points = True      # the method's 'centers' are points of the embedding

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.algorithm:
            cls.__init__ = _make_init(cls)

    # -- what the parameters map to -----------------------------------------
    @classmethod
    def _fields(cls) -> dict[str, str]:
        """{parameter: config field} of the protocol and the algorithm's sections."""
        c = config_lib.make_config(cls.algorithm, "digits")
        sections = cls.sections if cls.sections is not None else ((cls.algorithm,) if cls.algorithm in c else ())
        fields = {name: field for name, field in PROTOCOL.items() if name not in cls.unused}
        for section in sections:
            for name in c[section]:
                if f"{section}.{name}" in cls.fixed:
                    continue
                if name in fields:
                    raise TypeError(f"{cls.__name__}: parameter {name!r} of section {section!r} is taken")
                fields[name] = f"{section}.{name}"
        return fields

    def make_config(self, data_path, n_samples: int):
        """The run's config: the algorithm's, with this estimator's parameters."""
        c = config_lib.make_config(self.algorithm, str(data_path))
        values = {field: getattr(self, name) for name, field in self._fields().items()} | {
            "seed": self.random_state or 0, "seeds": self.n_seeds, "dataset.n_clusters": getattr(self, self.k_parameter),
            "progress": bool(self.progress)}
        fields = {field: name for name, field in self._fields().items()} | {
            "seed": "random_state", "seeds": "n_seeds", "progress": "progress",
            "dataset.n_clusters": self.k_parameter}
        for field, value in values.items():
            value = value.item() if isinstance(value, np.generic) else tuple(value) if isinstance(value, list) else value
            try:
                _set(c, field, value)
            except TypeError:   # ml_collections keeps each field's type
                raise ValueError(f"{type(self).__name__}: {fields[field]}={value!r} is not of the type of its "
                                 f"default {_get(c, field)!r}") from None
        c.batch_size = min(int(c.batch_size), n_samples)
        try:
            config_lib.validate(c)
        except config_lib.ConfigError as e:
            if e.field not in fields:
                raise ValueError(f"{type(self).__name__}: {e}") from None
            name = fields[e.field]   # the message in the estimator's terms
            message = str(e).replace(f"{e.field} = {_get(c, e.field)!r}", f"{name}={getattr(self, name)!r}")
            raise ValueError(f"{type(self).__name__}: {message}") from None
        return c

    # -- fit ----------------------------------------------------------------
    def fit(self, X, y=None):
        """Train, select an epoch per seed without labels, read back.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The data (a DataFrame's column names become `feature_names_in_`).
        y : None
            Ignored: clustering uses no labels.

        Returns
        -------
        self : object
            The fitted estimator. A `ChanceWarning` says when its seeds
            agree no better than chance.
        """
        x = validate_data(self, X, dtype=(np.float64, np.float32), ensure_min_samples=2)
        k = getattr(self, self.k_parameter)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
            raise ValueError(f"{type(self).__name__}: {self.k_parameter} must be an integer >= 2, got {k!r} "
                             "(one cluster is no clustering: dcjax refuses it)")
        known = [selection.DEFAULT_SELECTOR, *selection.ASSESSOR_SELECTORS, *selection.SELECTORS]
        if self.selector not in known:
            raise ValueError(f"{type(self).__name__}: unknown selector {self.selector!r}; choose from {known}")
        if self.launch_selector is not None and self.launch_selector not in launch.LAUNCH_SELECTORS:
            raise ValueError(f"{type(self).__name__}: unknown launch_selector {self.launch_selector!r}; choose "
                             f"from {list(launch.LAUNCH_SELECTORS)} or None (the default)")
        config = self.make_config(DATA_FILE, len(x))
        data.validate(x, None, methods.n_centers(config, int(k)), int(config.batch_size), name="X")
        workdir = Path(self.workdir) if self.workdir is not None else Path(tempfile.mkdtemp(prefix="dcjax_"))
        try:
            with evaluate._quiet_orbax():   # orbax warns on every read-only open
                self._fit_in(workdir.absolute(), x)
        finally:
            if self.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        self.workdir_ = None if self.workdir is None else workdir
        self.chance_ = self.selection_.get("chance") or self.summary_.get("chance")
        if self.chance_ and (self.chance_.get("looks_like_chance") or self.chance_.get("came_apart")):
            warnings.warn(f"{type(self).__name__}: {self.chance_['message']}", ChanceWarning, stacklevel=2)
        return self

    def _fit_in(self, workdir: Path, x: np.ndarray) -> None:
        data_path = workdir / DATA_FILE
        config = self.make_config(data_path, len(x))
        if data_path.exists() and not np.array_equal(np.load(data_path, mmap_mode="r"), x):
            raise ValueError(f"{workdir} holds a run on other data; use another workdir")
        workdir_lib.check_own(workdir)
        workdir_lib.mark(workdir)   # before data.npy: the folder is dcjax's from here
        if not data_path.exists():
            np.save(data_path, x)
        self.summary_ = train.train_and_evaluate(config, workdir)
        base = selection.base_table(workdir)
        result = selection.select_run(workdir, self.selector, feats=selection.features(base))
        self._read_back(workdir, config, result, x)
        self.history_ = base.assign(phase=result["phase"])[["seed", "phase", *base.columns.drop("seed")]]
        self.selection_ = result

    def _read_back(self, workdir: Path, config, result: dict, x: np.ndarray) -> None:
        phase, k = result["phase"], int(config.dataset.n_clusters)
        seeds = train.seed_ids(config)
        epochs = np.array([s["epoch"] for s in result["seeds"]])
        labels = np.zeros((len(seeds), len(x)), np.int64)
        record = run_lib.RunRecord(workdir)
        for epoch in sorted(set(epochs)):   # as the scoring pass stored them (pretraining: its k-means)
            stored = record.load_scored(phase, int(epoch))["labels"]
            for i in np.flatnonzero(epochs == epoch):
                labels[i] = stored[i]
        chosen, self.labels_, self.launch_ = launch_choice(workdir, result, labels, self.launch_selector)
        own = self.launch_ is None or self.launch_["seed"] >= 0   # labels_ is a seed's own partition
        epoch = int(epochs[chosen] if self.launch_ is None or not own else self.launch_["epoch"])
        with evaluate._quiet_orbax():
            final = checkpointing.load_snapshot(workdir, max(checkpointing.list_epochs(workdir, "clustering")))
            state = checkpointing.load_state(workdir, epoch, phase)   # its model, for transform
        self.seeds_ = seeds
        self.selected_epoch_ = epochs
        self.labels_per_seed_ = labels
        self.final_labels_per_seed_ = np.asarray(final["assignments"], np.int64)
        self.seed_ = seeds[chosen]
        self.final_labels_ = self.final_labels_per_seed_[chosen]

        params = state["params"] if phase == "pretrain" else state["params"]["ae"]
        self.autoencoder_params_ = jax.tree.map(lambda a: np.asarray(a[chosen]), params)
        self.normalization_ = data.fit_normalization(x, data.normalize_mode(config.dataset.normalize, "tabular"))
        self.config_ = config   # transform reads its model settings
        self.epoch_ = epoch     # of seed_'s model: DKM's soft assignment reads its alpha there
        if phase == "pretrain" or not own or not self.centers_are_points:
            # a k-means or consensus partition (or a method whose 'centers' are
            # not points, DECCS's classifiers): its clusters' means
            self.cluster_centers_ = _cluster_means(self._embed(x), self.labels_, k)
        else:
            self.cluster_centers_ = np.asarray(state["params"]["centers"][chosen], np.float32)
        if self.k_parameter != "n_clusters":   # UNSEEN: the surviving clusters, renumbered in the order of their centres
            present, self.labels_ = np.unique(self.labels_, return_inverse=True)
            self.cluster_centers_ = self.cluster_centers_[present]
        self.n_clusters_ = len(self.cluster_centers_)
        self._n_features_out = self.cluster_centers_.shape[1]   # get_feature_names_out, set_output
        self._keep_rule(state, chosen, own and phase != "pretrain")

    def _keep_rule(self, state: dict, chosen: int, own: bool) -> None:
        """What `predict` needs beyond `cluster_centers_` (DECCS: its classifier)."""

    # -- use ------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """The embedding of X by the autoencoder of `seed_` at its selected epoch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        Z : ndarray of shape (n_samples, embedding_dim)
        """
        return self._embed(X)

    def _embed(self, X) -> np.ndarray:
        """`transform` as an array whatever `set_output` asks (predict reads it)."""
        check_is_fitted(self, "autoencoder_params_")
        x = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        x = np.asarray(x, np.float32) if self.normalization_ is None else self.normalization_(x)
        model = make_autoencoder(self.n_features_in_, self.config_.model, int(self.config_.dataset.n_clusters))
        encode = jax.jit(lambda p, xb: model.apply({"params": p}, xb, method=model.encode))
        chunk = int(self.config_.eval_chunk)
        return np.concatenate([np.asarray(encode(self.autoencoder_params_, x[i:i + chunk]))
                               for i in range(0, len(x), chunk)])

    def _distances(self, X) -> np.ndarray:
        """Squared distances of X's embedding to `cluster_centers_`, (n_samples, n_clusters_)."""
        z = self._embed(X).astype(np.float64)
        return ((z[:, None, :] - self.cluster_centers_[None].astype(np.float64)) ** 2).sum(-1)

    def predict(self, X) -> np.ndarray:
        """The nearest of `cluster_centers_` in the embedding (the assignment
        rule of every algorithm here).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self._distances(X).argmin(axis=1)

    # -- keeping a fitted estimator without pickle ------------------------------
    _SAVED_ARRAYS = ("labels_", "labels_per_seed_", "final_labels_per_seed_", "final_labels_", "selected_epoch_",
                     "cluster_centers_")
    _SAVED_VALUES = ("seeds_", "seed_", "epoch_", "n_clusters_", "n_features_in_", "_n_features_out", "launch_",
                     "selection_", "summary_", "chance_")

    def save(self, path=None) -> Path:
        """Write the fitted estimator to `path` (default: its workdir):
        estimator.json (parameters, config, selection, summary, history) and
        estimator.npz (the model's and the clustering's arrays). No pickle:
        `load` reads it back with any dcjax of the same format.

        Parameters
        ----------
        path : str or Path, optional
            A folder; required when the estimator was fitted with workdir=None.

        Returns
        -------
        folder : Path
        """
        check_is_fitted(self, "autoencoder_params_")
        folder = Path(path) if path is not None else self.workdir_
        if folder is None:
            raise ValueError(f"{type(self).__name__} was fitted with workdir=None (a temporary folder, deleted); "
                             "give save() a folder")
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"params/{key}": np.asarray(v)
                  for key, v in traverse_util.flatten_dict(self.autoencoder_params_, sep="/").items()}
        arrays |= {name: np.asarray(getattr(self, name)) for name in self._SAVED_ARRAYS if hasattr(self, name)}
        if self.normalization_ is not None:
            arrays |= {f"normalization/{f}": np.asarray(getattr(self.normalization_, f))
                       for f in ("mean", "std", "constant")}
        extra = self._saved_rule()
        arrays |= {f"rule/{k}": np.asarray(v) for k, v in extra.get("arrays", {}).items()}
        params = self.get_params()
        meta = {"class": type(self).__name__, "format": 1, "params": params,
                "path_params": [k for k, v in params.items() if isinstance(v, Path)],
                "config": json.loads(self.config_.to_json_best_effort()),
                "values": {name: getattr(self, name) for name in self._SAVED_VALUES if hasattr(self, name)},
                "normalization_channels": None if self.normalization_ is None else self.normalization_.channels,
                "feature_names_in_": getattr(self, "feature_names_in_", None),
                "rule": extra.get("values"), "workdir_": None if self.workdir_ is None else str(self.workdir_),
                "history_": self.history_.to_json(orient="split")}
        checkpointing.save_npz_atomic(folder / SAVED_ARRAYS, arrays)
        checkpointing.write_text_atomic(folder / SAVED_JSON, json.dumps(meta, indent=1, default=_json_value))
        return folder

    @classmethod
    def load(cls, path) -> "DeepClusterer":
        """The estimator `save` wrote to `path`, fitted, ready to predict.

        Parameters
        ----------
        path : str or Path
            The folder `save` wrote.

        Returns
        -------
        estimator : DeepClusterer
            An instance of the saved class.
        """
        import ml_collections
        folder = Path(path)
        if not (folder / SAVED_JSON).is_file():
            raise FileNotFoundError(f"{folder} holds no saved estimator ({SAVED_JSON}); save() writes one")
        meta = json.loads((folder / SAVED_JSON).read_text())
        saved = {c.__name__: c for c in ESTIMATORS.values()}[meta["class"]]
        if not issubclass(saved, cls):
            raise TypeError(f"{folder} holds a {meta['class']}, not a {cls.__name__}")
        defaults = saved().get_params()
        params = {k: tuple(v) if isinstance(defaults.get(k), tuple) and isinstance(v, list)
                  else Path(v) if k in meta.get("path_params", ()) else v for k, v in meta["params"].items()}
        model = saved(**params)
        with np.load(folder / SAVED_ARRAYS, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        model.autoencoder_params_ = traverse_util.unflatten_dict(
            {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}, sep="/")
        for name in cls._SAVED_ARRAYS:
            if name in arrays:
                setattr(model, name, arrays[name])
        for name, value in meta["values"].items():
            setattr(model, name, value)
        model.normalization_ = None if meta["normalization_channels"] is None else data.Normalization(
            *(arrays[f"normalization/{f}"] for f in ("mean", "std", "constant")), meta["normalization_channels"])
        if meta.get("feature_names_in_") is not None:
            model.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
        model.config_ = ml_collections.ConfigDict(meta["config"])
        model.workdir_ = None if meta["workdir_"] is None else Path(meta["workdir_"])
        model.history_ = pd.read_json(StringIO(meta["history_"]), orient="split")
        model._load_rule(meta.get("rule"), {k[len("rule/"):]: v for k, v in arrays.items() if k.startswith("rule/")})
        return model

    def _saved_rule(self) -> dict:
        """What `_keep_rule` kept, as {'values': JSON, 'arrays': {name: array}}."""
        return {}

    def _load_rule(self, values, arrays: dict) -> None:
        """Set back what `_saved_rule` saved."""


def _json_value(value):
    """JSON for what estimator.json holds beyond JSON's types (NumPy scalars and arrays, paths, NaN as null)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


class _SoftAssignment:
    """`predict_proba` for the methods that assign softly (DEC, IDEC, DKM):
    the method's own soft assignment to `cluster_centers_`, at `epoch_`. Its
    argmax is `predict`'s nearest centre: both decrease with distance."""

    def predict_proba(self, X) -> np.ndarray:
        """The method's soft assignment of X's embedding to `cluster_centers_`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_clusters_)
            Rows sum to 1; their argmax is `predict`.
        """
        check_is_fitted(self, "autoencoder_params_")
        z = self._embed(X)
        soft = methods.get_method(self.config_).soft_assign
        proba = np.asarray(soft(jnp.asarray(self.cluster_centers_), jnp.asarray(z), jnp.int32(self.epoch_)),
                           np.float64)
        return proba / proba.sum(axis=1, keepdims=True)

    def explain(self, tags=None, X=None, *, y=None, **options) -> pd.DataFrame:
        """Why each cluster of `labels_` is one (`dcjax.explain.explain`): a
        tidy table of each cluster's tags by DDC's ILP and by top-k, with TC,
        ITF, each tag's mutual information and, given `y`, purity. `tags`:
        (N, T) in [0, 1] (a DataFrame's columns name them); without, tags are
        quantile bins of `X`'s features (a DataFrame's columns name them)."""
        from dcjax import explain as explain_lib

        check_is_fitted(self, "labels_")
        if tags is None:
            if X is None:
                raise ValueError(f"{type(self).__name__}.explain: give tags, or X to derive tags from")
            tags, names = explain_lib.derive_tags(check_array(X), getattr(X, "columns", None))
        else:
            names = list(map(str, tags.columns)) if hasattr(tags, "columns") else None
        return explain_lib.explain(self.labels_, np.asarray(tags), names, y=y, **options)


def _cluster_means(z: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Centres of a k-means partition: its clusters' means (NaN-free: an empty cluster's is 0)."""
    z = np.asarray(z, np.float64)
    counts = np.bincount(labels, minlength=k)[:, None]
    sums = np.zeros((k, z.shape[1]))
    np.add.at(sums, labels, z)
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def _make_init(cls):
    """An `__init__` whose signature lists every parameter (scikit-learn reads
    it), storing each argument unchanged, as scikit-learn asks."""
    c = config_lib.make_config(cls.algorithm, "digits")
    run = {"n_seeds": 1, "random_state": 0, "workdir": None, "selector": selection.DEFAULT_SELECTOR,
           "launch_selector": None, "progress": False}
    hyper = {name: _get(c, field) for name, field in cls._fields().items()}
    keyword = inspect.Parameter.KEYWORD_ONLY
    positional = [] if cls.k_parameter != "n_clusters" else [   # UNSEEN: k is what it finds
        inspect.Parameter("n_clusters", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *positional]
        + [inspect.Parameter(name, keyword, default=value) for name, value in (run | hyper).items()])

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    __init__.__qualname__ = f"{cls.__name__}.__init__"
    __init__.__doc__ = f"Store the parameters (see {cls.__name__}); defaults: the {cls.algorithm} config."
    cls.__doc__ = _numpydoc(cls, signature)
    return __init__


# What each parameter means (numpydoc); the config's comments say more.
PARAMETER_DOCS = {
    "n_clusters": "int\n    The number of clusters k (>= 2; one cluster is refused on purpose).",
    "n_seeds": "int, default=1\n    Seeds trained together in one launch (the chance test needs >= 2).",
    "random_state": "int, default=0\n    The first seed id; seeds random_state, random_state + 1, ... (None: 0).",
    "workdir": "str or Path, default=None\n    Where the run is written (checkpoints, as the CLI writes them); "
               "None: a temporary folder, deleted after fit.",
    "selector": "str, default='default'\n    The label-free epoch selector (`dcjax.selection`).",
    "launch_selector": "str, default=None\n    How `labels_` is chosen among seeds (`dcjax.launch`); None: the default.",
    "progress": "bool, default=False\n    Show progress bars.",
    "pretrain_epochs": "int\n    Autoencoder pretraining epochs (config pretrain.epochs).",
    "clustering_epochs": "int\n    Clustering epochs (config clustering.epochs).",
    "pretrain_learning_rate": "float\n    Adam's learning rate in pretraining.",
    "clustering_learning_rate": "float\n    The learning rate of the clustering phase.",
    "batch_size": "int\n    Mini-batch size (capped at the number of samples).",
    "hidden_dims": "tuple of int\n    Widths of the encoder's hidden layers (the decoder mirrors them).",
    "embedding_dim": "int\n    Dimension of the embedding (0: the number of clusters).",
    "activation": "str\n    'relu' (the papers) or 'leaky_relu' (ClustPy).",
    "kmeans_n_init": "int\n    k-means restarts for the initial centres.",
    "normalize": "str\n    'auto' (z-score per feature for tabular X), 'feature', 'channel' or 'none'.",
    "cluster_sizes": "str\n    'auto' (here: 'unknown'), 'unknown' or 'even': whether the clusters are known to be of "
                     "near-equal size; it picks how `labels_` is chosen among seeds (`dcjax.launch.default_selector`).",
    "k_init": "int\n    UNSEEN: the number of clusters to start from; clusters die, `n_clusters_` is what is left.",
}
ATTRIBUTES_DOC = """
Attributes
----------
labels_ : ndarray of shape (n_samples,)
    The launch's chosen clustering of the training data.
cluster_centers_ : ndarray of shape (n_clusters_, embedding_dim)
    Centres in the embedding of `seed_`'s model; `predict` assigns to the nearest.
n_clusters_ : int
    The number of clusters of `labels_`.
seeds_ : list of int
    The seed ids trained.
seed_ : int
    The seed whose model serves `transform` and `predict`.
selected_epoch_ : ndarray of shape (n_seeds,)
    Each seed's epoch chosen without labels.
epoch_ : int
    The epoch of `seed_`'s model.
labels_per_seed_ : ndarray of shape (n_seeds, n_samples)
    Each seed's clustering at its selected epoch.
final_labels_per_seed_ : ndarray of shape (n_seeds, n_samples)
    Each seed's clustering at the last epoch.
final_labels_ : ndarray of shape (n_samples,)
    `seed_`'s clustering at the last epoch.
history_ : pandas.DataFrame
    Per seed and epoch: losses and the label-free scores the selection read.
selection_ : dict
    The selection's result (as selection.json has it).
launch_ : dict or None
    The launch's choice among seeds and why (None with one seed).
summary_ : dict
    The training summary (as summary.json has it).
chance_ : dict or None
    The chance test of the selected partitions (`dcjax.chance`); a `ChanceWarning` when it says chance
    or that the seeds came apart during clustering.
n_features_in_ : int
    Number of features seen in fit.
feature_names_in_ : ndarray of shape (n_features_in_,)
    Column names of X when it was a DataFrame with string column names.
workdir_ : Path or None
    The run's folder (None: the temporary one was deleted).
"""


def _numpydoc(cls, signature) -> str:
    """The class docstring with numpydoc Parameters (from PARAMETER_DOCS or
    the config field each sets) and Attributes sections."""
    fields = cls._fields()
    lines = [inspect.cleandoc(cls.__doc__ or ""), "", "Parameters", "----------"]
    for name, parameter in list(signature.parameters.items())[1:]:
        text = PARAMETER_DOCS.get(name)
        if text is None:
            kind = type(parameter.default).__name__
            text = f"{kind}, default={parameter.default!r}\n    The config field ``{fields[name]}`` (dcjax/config.py)."
        lines.append(f"{name} : {text}")
    return "\n".join(lines) + "\n" + ATTRIBUTES_DOC


class AEKMeans(DeepClusterer):
    """Autoencoder + k-means: the baseline (the selection picks the pretraining epoch to cluster)."""
    algorithm = "ae_kmeans"
    unused = ("clustering_epochs", "clustering_learning_rate")


class DEC(_SoftAssignment, DeepClusterer):
    """Deep Embedded Clustering (Xie et al. 2016)."""
    algorithm = "dec"


class IDEC(_SoftAssignment, DeepClusterer):
    """Improved DEC: DEC with the reconstruction loss kept (Guo et al. 2017)."""
    algorithm = "idec"
    sections = ("dec", "idec")


class DCN(DeepClusterer):
    """Deep Clustering Network (Yang et al. 2017)."""
    algorithm = "dcn"


class DKM(_SoftAssignment, DeepClusterer):
    """Deep k-Means (Fard et al. 2020)."""
    algorithm = "dkm"


class DECCS(DeepClusterer):
    """DECCS, consensus representations from a clustering ensemble (Miklautz
    et al. 2022). `labels_` of a seed's own epoch is its consensus member's
    partition; `predict` applies that member's linear classifier to the
    embedding (the nearest of `cluster_centers_`, the means of `labels_`,
    where labels_ is a consensus of seeds or clustering epoch 0's k-means)."""
    algorithm = "deccs"
    centers_are_points = False   # its 'centers' are the members' classifiers

    def _keep_rule(self, state: dict, chosen: int, own: bool) -> None:
        extras = jax.tree.map(lambda a: np.asarray(a[chosen]), state["extras"])
        self.classifier_ = None
        if own and int(extras["rounds"]) > 0:
            member = int(np.argmax(extras["weights"]))   # the consensus: the most agreeing member
            classifiers = state["params"]["centers"]
            self.classifier_ = {"member": deccs_method.MEMBERS[member],
                                "weights": np.asarray(classifiers["weights"][chosen][member]),
                                "bias": np.asarray(classifiers["bias"][chosen][member]),
                                "present": extras["present"][member]}

    def _saved_rule(self) -> dict:
        c = self.classifier_
        if c is None:
            return {"values": None}
        return {"values": {"member": c["member"]},
                "arrays": {k: np.asarray(c[k]) for k in ("weights", "bias", "present")}}

    def _load_rule(self, values, arrays: dict) -> None:
        self.classifier_ = None if values is None else {"member": values["member"], **arrays}

    def predict(self, X) -> np.ndarray:
        """The consensus member's classifier on the embedding (else the nearest centre).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        if getattr(self, "classifier_", None) is None:
            return super().predict(X)
        c = self.classifier_
        logits = self._embed(X) @ c["weights"] + c["bias"]
        return np.where(c["present"], logits, deccs_method.ABSENT_LOGIT).argmax(axis=1)


class _Unseen(DeepClusterer):
    """UNSEEN around a base algorithm (Leiber et al. 2024): start from k_init
    clusters, let the ones that shrink below t of their size die."""
    fixed = ("unseen.enabled",)
    k_parameter = "k_init"   # no n_clusters: k is what it finds


class UnseenDCN(_Unseen):
    """UNSEEN around DCN: the number of clusters unknown."""
    algorithm = "unseen_dcn"
    sections = ("dcn", "unseen")


class UnseenDEC(_Unseen):
    """UNSEEN around DEC: the number of clusters unknown."""
    algorithm = "unseen_dec"
    sections = ("dec", "unseen")


class UnseenDKM(_Unseen):
    """UNSEEN around DKM: the number of clusters unknown."""
    algorithm = "unseen_dkm"
    sections = ("dkm", "unseen")


ESTIMATORS = {cls.algorithm: cls for cls in (AEKMeans, DEC, IDEC, DCN, DKM, DECCS, UnseenDCN, UnseenDEC, UnseenDKM)}
