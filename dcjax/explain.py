"""Say why a cluster is a cluster: explanations of a partition from tags (DDC).

    python -m dcjax.explain --workdir runs/x                 # tags derived from the run's own features
    python -m dcjax.explain --workdir runs/x --tags tags.csv # your (N, T) tags, values in [0, 1]

Tags are side information: an (N, T) matrix of values in [0, 1], one row per
data row, given as a file (.csv/.tsv with a header naming the tags, .npy, or
.npz with `tags` and optional `names`), as columns of the data file
(`dataset.tag_columns`), or derived from the features themselves by quantile
bins (`derive_tags`: 'alcohol: high'). Nothing in training or in the
label-free selection reads them unless asked to (`tags.*` in the config).

An explanation of cluster i is a set of tags D_i. Two ways to choose them:
- 'ilp', Deep Descriptive Clustering's integer linear program (Zhang &
  Davidson, IJCAI 2021, Eqs. 2-4). With Q[i, j] the mean of tag j over
  cluster i's members and W[i, j] = 1 when tag j explains cluster i:
      minimise   sum_ij W_ij                        (concise: few tags)
      subject to sum_j W_ij Q_ij >= alpha  for each cluster i   (coverage)
                 sum_i W_ij Q_ij <= beta   for each tag j        (orthogonal:
                 a tag may not explain several clusters it is common in)
  alpha is the number of its explanation's tags an average member carries.
  beta, unless given, is the smallest multiple of `beta_step` (1, as DDC's)
  that admits a solution: DDC's Algorithm 1 raises beta from 0 by a fixed
  step until the ILP is feasible (feasibility only grows with beta, so here
  that step is found by bisection). At beta = 1 a tag common in one cluster
  explains that cluster alone.
  Solved by HiGHS through `scipy.optimize.milp`. Among solutions with the
  fewest tags the one whose tags are least common outside their clusters is
  taken (a tie-break too small to change the count).
- 'topk', the thesis's baseline: each cluster's k tags of highest Q[i, j].

Scores, as DDC defines them (its Eqs. 8 and 9), per cluster, then averaged:
- Tag Coverage TC(C_i) = 1/|D_i| sum_{d in D_i} |{x in C_i : d in t_x}| / |C_i|,
  the mean over its tags of Q[i, d] (for tags in [0, 1], the mean value);
- Inverse Tag Frequency ITF(C_i) = 1/|D_i| sum_{d in D_i} log(K / #{j : d in D_j}),
  natural log, in [0, log K]: log K when no tag explains two clusters.
Beside them, each tag's mutual information with the partition (nats; a tag
counts as present at >= 0.5) and, where labels are known, each cluster's
purity (the share of its majority label).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ("ilp", "topk")
DEFAULT_ALPHA = 1.0
DEFAULT_TOP_K = 3
BETA_STEP = 1.0   # DDC: beta grows by 1 from 0 until the ILP is feasible
MAX_DERIVED_FEATURES = 100   # a run with more (images) needs tags of its own: bins of pixels explain little
BIN_NAMES = {2: ("low", "high"), 3: ("low", "medium", "high"), 4: ("low", "medium-low", "medium-high", "high")}


class ExplainError(ValueError):
    """Tags or settings no explanation can use; the message is one line."""


# ----------------------------------------------------------------------------
# Tags

def derive_tags(x, names=None, bins: int = 3) -> tuple[np.ndarray, list[str]]:
    """One-hot quantile bins of each feature ('alcohol: high'), for a table
    without tags of its own. A feature with at most `bins` distinct values
    gets one tag per value (low/high for a binary one); a constant feature
    gives no tag: it would be carried by everyone."""
    from sklearn.preprocessing import KBinsDiscretizer

    x = np.asarray(x, np.float64).reshape(len(x), -1)
    names = [f"feature {j}" for j in range(x.shape[1])] if names is None else [str(n) for n in names]
    columns, tag_names = [], []
    for name, column in zip(names, x.T):
        values = np.unique(column)
        if len(values) < 2:
            continue
        if len(values) <= bins:
            onehot = column[:, None] == values[None]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # 'bins too small ... removed': heavy ties
                onehot = KBinsDiscretizer(bins, encode="onehot-dense", strategy="quantile",
                                          quantile_method="averaged_inverted_cdf",
                                          subsample=None).fit_transform(column[:, None])
        n = onehot.shape[1]
        columns.append(onehot)
        tag_names += [f"{name}: {w}" for w in BIN_NAMES.get(n, tuple(f"q{b + 1} of {n}" for b in range(n)))]
    if not columns:
        raise ExplainError("every feature is constant: no tags can be derived")
    return np.concatenate(columns, axis=1).astype(np.float32), tag_names


def check_tags(tags, n_rows: int, where: str = "tags") -> np.ndarray:
    """(N, T) float32 in [0, 1], or a one-line ExplainError."""
    tags = np.asarray(tags)
    if tags.ndim != 2 or tags.shape[0] != n_rows or tags.shape[1] == 0:
        raise ExplainError(f"{where}: shape {tags.shape}, expected ({n_rows}, T): one row of tags per data row")
    try:
        tags = tags.astype(np.float32)
    except (TypeError, ValueError):
        raise ExplainError(f"{where}: the tags are {tags.dtype}, not numbers") from None
    bad = np.argwhere(~np.isfinite(tags) | (tags < 0) | (tags > 1))
    if len(bad):
        r, c = bad[0]
        raise ExplainError(f"{where}: row {r}, tag {c} (0-based) is {tags[r, c]}; tags must be in [0, 1]")
    return tags


def load_tags(path, n_rows: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Tags from a file: .csv/.tsv (a header row names the tags), .npy, or
    .npz holding `tags` (and `names`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExplainError(f"{path}: no such tag file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        tags, names = frame.to_numpy(), [str(c) for c in frame.columns]
    elif suffix == ".npy":
        tags = np.load(path, allow_pickle=False)
        names = None
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if "tags" not in f.files:
                raise ExplainError(f"{path}: no array 'tags' (it has {', '.join(f.files) or 'none'})")
            tags = f["tags"]
            names = [str(n) for n in f["names"]] if "names" in f.files else None
    else:
        raise ExplainError(f"{path}: tags must be .csv, .tsv, .npy or .npz")
    tags = check_tags(tags, len(tags) if n_rows is None else n_rows, str(path))
    return tags, names or [f"tag {j}" for j in range(tags.shape[1])]


def split_tag_columns(path, tag_columns) -> tuple[np.ndarray, list[str]]:
    """The columns `tag_columns` (names, or a comma-separated string) of a
    CSV/TSV data file, as tags."""
    columns = [c.strip() for c in tag_columns.split(",")] if isinstance(tag_columns, str) else list(tag_columns)
    frame = pd.read_csv(path, sep="\t" if str(path).lower().endswith(".tsv") else ",")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ExplainError(f"{path}: no column {missing[0]!r} (dataset.tag_columns); it has "
                           f"{', '.join(map(str, frame.columns))}")
    return check_tags(frame[columns].to_numpy(), len(frame), str(path)), columns


# ----------------------------------------------------------------------------
# Explanations

def cluster_frequencies(labels, tags) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clusters, sizes, Q): the non-empty clusters, their sizes, and Q[i, j],
    the mean of tag j over cluster i's members."""
    labels = np.asarray(labels).reshape(-1)
    clusters, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(clusters), tags.shape[1]))
    np.add.at(sums, inverse, np.asarray(tags, np.float64))
    return clusters, sizes, sums / sizes[:, None]


def _solve(q: np.ndarray, alpha: float, beta: float, time_limit: float, tie_break: bool = True):
    """DDC's ILP at a fixed beta: W (K, M) bool, or None when infeasible."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    k, m = q.shape
    elsewhere = (q.sum(0, keepdims=True) - q) / max(k - 1, 1)   # a tag's mean frequency in the other clusters
    cost = 1.0 + tie_break * elsewhere.ravel() / (k * m + 1)    # tie-break: sum of it < 1, never changes the count
    coverage = np.zeros((k, k * m))
    for i in range(k):
        coverage[i, i * m:(i + 1) * m] = q[i]
    load = np.zeros((m, k * m))
    for j in range(m):
        load[j, j::m] = q[:, j]
    upper = (q <= beta + 1e-12).ravel().astype(float)   # a tag commoner than beta in a cluster cannot explain it
    res = milp(cost, integrality=np.ones(k * m), bounds=Bounds(0, upper),
               constraints=[LinearConstraint(coverage, lb=alpha), LinearConstraint(load, ub=beta)],
               options={"time_limit": time_limit, "mip_rel_gap": 0.0})
    if res.x is None:
        if res.status == 1:
            raise ExplainError(f"the ILP found no solution within {time_limit:g} s (beta={beta:g}); "
                               "raise the time limit or use fewer tags")
        return None
    return res.x.reshape(k, m) > 0.5


def _uncoverable(q: np.ndarray, alpha: float, beta: float | None, clusters, sizes) -> str | None:
    """A one-line reason naming the first cluster no explanation can cover, if any."""
    usable = q if beta is None else np.where(q <= beta + 1e-12, q, 0.0)
    reach = usable.sum(1)
    for i in np.flatnonzero(reach < alpha - 1e-9):
        extra = "" if beta is None else f" with tags no commoner than beta={beta:g}"
        return (f"alpha={alpha:g} is infeasible: cluster {clusters[i]} ({sizes[i]} members) can be covered at most "
                f"{reach[i]:.3g}{extra} (the sum of its tags' frequencies); lower alpha to at most {reach[i]:.3g}")
    return None


def ilp_explanations(q: np.ndarray, alpha: float = DEFAULT_ALPHA, beta: float | None = None, *,
                     beta_step: float = BETA_STEP, time_limit: float = 60.0, tie_break: bool = True,
                     clusters=None, sizes=None) -> tuple[np.ndarray, float]:
    """DDC's explanations (module docstring): (W (K, M) bool, the beta used).
    An alpha no explanation meets raises ExplainError naming the cluster.
    tie_break=False is DDC's program alone: any of its optimal W."""
    q = np.asarray(q, np.float64)
    clusters = np.arange(len(q)) if clusters is None else clusters
    sizes = np.zeros(len(q), int) if sizes is None else sizes
    if not alpha > 0:
        raise ExplainError(f"alpha={alpha!r} must be > 0")
    why = _uncoverable(q, alpha, beta, clusters, sizes)
    if why:
        raise ExplainError(why)
    if beta is not None:
        w = _solve(q, alpha, beta, time_limit, tie_break)
        if w is None:
            raise ExplainError(f"alpha={alpha:g}, beta={beta:g}: every cluster can be covered alone, but not all "
                               "together without a tag passing beta; raise beta or leave it out (the smallest that works)")
        return w, float(beta)
    lo, hi = 0, int(np.ceil(len(q) / beta_step))   # beta = K admits any covering: each Q <= 1
    best = _solve(q, alpha, hi * beta_step, time_limit, tie_break)
    while hi - lo > 1:   # invariant: hi feasible, lo infeasible (beta 0 covers nothing)
        mid = (lo + hi) // 2
        w = _solve(q, alpha, mid * beta_step, time_limit, tie_break)
        if w is None:
            lo = mid
        else:
            hi, best = mid, w
    return best, round(hi * beta_step, 10)


def topk_explanations(q: np.ndarray, k: int = DEFAULT_TOP_K) -> np.ndarray:
    """The thesis's baseline: each cluster's k tags of highest mean (ties: the first)."""
    q = np.asarray(q)
    w = np.zeros(q.shape, bool)
    order = np.argsort(-q, axis=1, kind="stable")[:, :min(k, q.shape[1])]
    np.put_along_axis(w, order, True, axis=1)
    return w


def tag_coverage(w: np.ndarray, q: np.ndarray) -> np.ndarray:
    """DDC's TC per cluster (Eq. 8): the mean of Q[i, d] over its tags d (NaN for none)."""
    w = np.asarray(w, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * q).sum(1) / w.sum(1)


def inverse_tag_frequency(w: np.ndarray) -> np.ndarray:
    """DDC's ITF per cluster (Eq. 9): the mean over its tags of log(K / the
    number of clusters that tag explains); natural log (NaN for no tags)."""
    w = np.asarray(w, bool)
    uses = w.sum(0)
    per_tag = np.log(len(w) / np.maximum(uses, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * per_tag).sum(1) / w.sum(1)


def tag_mutual_information(labels, tags) -> np.ndarray:
    """Each tag's mutual information (nats) with the partition, the tag
    present where it is >= 0.5."""
    from sklearn.metrics import mutual_info_score

    present = np.asarray(tags) >= 0.5
    return np.array([mutual_info_score(labels, present[:, j]) for j in range(present.shape[1])])


def purity(labels, y) -> tuple[np.ndarray, np.ndarray]:
    """(clusters, purity): the share of each cluster's majority label."""
    labels, y = np.asarray(labels), np.asarray(y)
    clusters = np.unique(labels)
    return clusters, np.array([np.bincount(pd.factorize(y[labels == c])[0]).max() / (labels == c).sum()
                               for c in clusters])


def explain(labels, tags, names=None, *, methods=METHODS, alpha: float = DEFAULT_ALPHA, beta: float | None = None,
            top_k: int = DEFAULT_TOP_K, y=None, beta_step: float = BETA_STEP, time_limit: float = 60.0) -> pd.DataFrame:
    """Explanations of a partition: a tidy table, one row per (method,
    cluster, tag of its explanation), with the cluster's TC, ITF and purity
    (NaN without y), the tag's frequency in the cluster and outside it, and
    its mutual information with the partition. `df.attrs['beta']` holds the
    ILP's beta; `summary(df)` the per-method means."""
    labels = np.asarray(labels).reshape(-1)
    tags = check_tags(tags, len(labels))
    names = [f"tag {j}" for j in range(tags.shape[1])] if names is None else list(names)
    if len(names) != tags.shape[1]:
        raise ExplainError(f"{len(names)} tag names for {tags.shape[1]} tags")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ExplainError(f"unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    clusters, sizes, q = cluster_frequencies(labels, tags)
    totals = np.asarray(tags, np.float64).sum(0)
    outside = (totals[None] - q * sizes[:, None]) / np.maximum(len(labels) - sizes, 1)[:, None]
    mi = tag_mutual_information(labels, tags)
    pure = purity(labels, y)[1] if y is not None else np.full(len(clusters), np.nan)
    rows, attrs = [], {}
    for method in methods:
        if method == "ilp":
            w, attrs["beta"] = ilp_explanations(q, alpha, beta, beta_step=beta_step, time_limit=time_limit,
                                                clusters=clusters, sizes=sizes)
        else:
            w = topk_explanations(q, top_k)
        tc, itf = tag_coverage(w, q), inverse_tag_frequency(w)
        for i, c in enumerate(clusters):
            for j in sorted(np.flatnonzero(w[i]), key=lambda j: -q[i, j]):
                rows.append(dict(method=method, cluster=int(c), size=int(sizes[i]), tag=names[j],
                                 frequency=q[i, j], frequency_elsewhere=outside[i, j], mutual_information=mi[j],
                                 cluster_tc=tc[i], cluster_itf=itf[i], purity=pure[i]))
    df = pd.DataFrame(rows)
    df.attrs.update(attrs, alpha=alpha, top_k=top_k, k=len(clusters))
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per method: TC and ITF (means over clusters, as DDC reports them), tags per cluster, purity."""
    per_cluster = df.groupby(["method", "cluster"], sort=False).agg(
        tc=("cluster_tc", "first"), itf=("cluster_itf", "first"), tags=("tag", "size"), purity=("purity", "first"))
    return per_cluster.groupby("method", sort=False).mean()


def explanation_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, cluster): its size, tags (with frequencies) and scores, for a page or a terminal."""
    return (df.assign(tag=df.tag + df.frequency.map(lambda f: f" ({f:.0%})"))
            .groupby(["method", "cluster"], sort=False)
            .agg(size=("size", "first"), tags=("tag", "; ".join), tc=("cluster_tc", "first"),
                 itf=("cluster_itf", "first"), purity=("purity", "first")).reset_index())


def planted(n_per_cluster: int = 100, k: int = 4, per_cluster: int = 2, shared: int = 2, noise: int = 10,
            p_own: float = 0.9, p_other: float = 0.05, p_shared: float = 0.97, p_noise: float = 0.2, seed: int = 0):
    """A partition whose clusters are each defined by a known tag set, for
    tests and docs: (labels, tags, names, planted {cluster: tag names}).
    Cluster i's own tags are present in p_own of its members and p_other of
    the rest; `shared` tags are in p_shared of everyone (commoner than any
    cluster's own tags, so a top-k explanation picks them); `noise` tags in
    p_noise of everyone."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per_cluster)
    p = np.concatenate([np.where(np.arange(k)[:, None] == np.repeat(np.arange(k), per_cluster)[None], p_own, p_other),
                        np.full((k, shared), p_shared), np.full((k, noise), p_noise)], axis=1)
    tags = (rng.random((len(labels), p.shape[1])) < p[labels]).astype(np.float32)
    names = ([f"cluster {i} tag {t}" for i in range(k) for t in range(per_cluster)]
             + [f"shared {t}" for t in range(shared)] + [f"noise {t}" for t in range(noise)])
    return labels, tags, names, {i: names[i * per_cluster:(i + 1) * per_cluster] for i in range(k)}


# ----------------------------------------------------------------------------
# A finished run

def run_data(workdir):
    """(config, x, y, feature names) of a run, the rows as it trained on them."""
    import ml_collections
    from dcjax import data

    config = ml_collections.ConfigDict(json.loads((Path(workdir) / "config.json").read_text()))
    ds = data.load_dataset(config.dataset)
    names = None
    name = str(config.dataset.name)
    if name.lower().endswith((".csv", ".tsv")):   # the header's names, less the label and tag columns
        header = pd.read_csv(name, sep="\t" if name.lower().endswith(".tsv") else ",", nrows=0).columns
        dropped = {str(config.dataset.get("label_column", ""))} | set(_tag_column_names(config))
        names = [c for c in header if c not in dropped]
        names = names if len(names) == ds.x.shape[1] else None
    return config, ds.x, ds.y, names


def _tag_column_names(config) -> list[str]:
    columns = str(config.dataset.get("tag_columns", "") or "")
    return [c.strip() for c in columns.split(",") if c.strip()]


def _rows(config, n_rows: int, n_tag_rows: int) -> np.ndarray | None:
    """The rows a subsampled run trained on, to align a file's tags with them."""
    from dcjax import data

    if n_tag_rows == n_rows:
        return None
    full = data.load_dataset(dict(config.dataset) | {"subsample": 0})
    if int(config.dataset.subsample) <= 0 or len(full.x) != n_tag_rows:
        raise ExplainError(f"the tags have {n_tag_rows} rows, the run's data {n_rows}")
    return data.subsample_rows(full.y, len(full.x), int(config.dataset.subsample), int(config.dataset.subsample_seed))


def run_tags(workdir, tags=None, bins: int = 3):
    """(tags, names, where from, labels or None) for a run: a file (`tags`,
    else the run's `tags.file`), the data file's tag columns, or derived
    from its features."""
    config, x, y, names = run_data(workdir)
    if tags is None and config.get("tags", {}).get("file"):   # the tags the run was trained with
        tags = config.tags.file
    if tags is not None:
        values, tag_names = load_tags(tags)
        source = str(tags)
    elif _tag_column_names(config):
        values, tag_names = split_tag_columns(config.dataset.name, _tag_column_names(config))
        source = f"columns {', '.join(tag_names)} of {config.dataset.name}"
    elif x.shape[1] > MAX_DERIVED_FEATURES:
        raise ExplainError(f"{x.shape[1]} features: too many to explain clusters by bins of each (at most "
                           f"{MAX_DERIVED_FEATURES}; pixels say little); give tags (--tags FILE, tags.file)")
    else:
        values, tag_names = derive_tags(x, names, bins)
        return values, tag_names, f"derived: {bins} quantile bins of each feature", y
    rows = _rows(config, len(x), len(values))
    return (values if rows is None else values[rows]), tag_names, source, y


def explain_run(workdir, tags=None, *, bins: int = 3, **options) -> pd.DataFrame:
    """Explanations of a finished run's chosen partition, `<workdir>/selected_labels.npy`
    (written by `python -m dcjax.select`), with purity where the data have labels."""
    path = Path(workdir) / "selected_labels.npy"
    if not path.exists():
        raise ExplainError(f"{path} not found: run `python -m dcjax.select --workdir {workdir}` first")
    labels = np.load(path)
    values, names, source, y = run_tags(workdir, tags, bins)
    df = explain(labels, values, names, y=y, **options)
    df.attrs["tags"] = source
    return df


def define_flags(fv) -> None:
    """The flags of `dcjax explain`, on `fv` (none is defined at import)."""
    from absl import flags
    flags.DEFINE_string("workdir", None, "a run chosen by dcjax select", flag_values=fv)
    flags.DEFINE_string("tags", None, "(N, T) tags in [0, 1]: .csv/.tsv with a header, .npy, .npz (default: the "
                        "data file's dataset.tag_columns, else quantile bins of the features)", flag_values=fv)
    flags.DEFINE_enum("method", "both", [*METHODS, "both"], "which explanations", flag_values=fv)
    flags.DEFINE_float("alpha", DEFAULT_ALPHA, "ILP coverage: tags of its explanation an average member carries",
                       flag_values=fv)
    flags.DEFINE_float("beta", None, "ILP overlap bound (default: the smallest feasible)", flag_values=fv)
    flags.DEFINE_integer("top_k", DEFAULT_TOP_K, "tags per cluster for topk", flag_values=fv)
    flags.DEFINE_integer("bins", 3, "quantile bins per feature for derived tags", flag_values=fv)
    flags.DEFINE_string("out", None, "CSV of the tidy table (default <workdir>/explanations.csv)", flag_values=fv)


def main(argv: list[str] | None = None, prog: str = "python -m dcjax.explain"):
    """`dcjax explain`: `argv` without the program name (default: sys.argv[1:])."""
    from dcjax import cli
    args = cli.parse(prog, define_flags, argv, doc=__doc__, required=("workdir",))
    if not (Path(args.workdir) / "config.json").exists():
        cli.fail(prog, f"{args.workdir} holds no run (no config.json)")
    methods = METHODS if args.method == "both" else (args.method,)
    try:
        df = explain_run(args.workdir, args.tags, bins=args.bins, methods=methods, alpha=args.alpha,
                         beta=args.beta, top_k=args.top_k)
    except ExplainError as e:
        cli.fail(prog, e)
    out = Path(args.out or Path(args.workdir) / "explanations.csv")
    df.to_csv(out, index=False)
    print(f"tags: {df.attrs['tags']}")
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(explanation_table(df).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(summary(df).to_string(float_format=lambda v: f"{v:.3f}"))
    if "beta" in df.attrs:
        print(f"ilp: alpha={args.alpha:g}, beta={df.attrs['beta']:g}")
    print(f"wrote {out}")
    return df


if __name__ == "__main__":
    main()
