"""A run report a person can look at: `dcjax report --workdir W` (or `python -m dcjax.report --workdir W`).

Writes `W/report.html`, one self-contained page (every figure an embedded
base64 PNG, so it opens offline and can be mailed), and the same PNGs in
`W/report/`. The page shows, for every seed: the loss curves of each phase
and component; the label-free scores per epoch (the columns `dcjax.select`
reads) with the selected and the final epoch marked; the cluster sizes over
epochs as a stacked area (a dying or collapsing cluster is a band that
thins out); 2-D views (PCA, and UMAP when `umap-learn` is installed) of the
selected and the final embedding; the selection's "why" and its warnings;
the config. Where the data set has labels, ACC/NMI/ARI over epochs with the
oracle epoch marked come last, in a section titled as evaluation only.

Every figure is drawn by a small function that takes data and an optional
matplotlib `ax` and returns the Figure (as scikit-learn's `*Display`
helpers do), so a notebook draws the same pictures as the page
(notebooks/explore_run.ipynb does). `Run` reads what those functions need
from a workdir, each part on first use: the losses need only records.jsonl,
while the scores score every epoch not yet in scores.csv (a progress bar
shows it) and the selection calls `dcjax.selection.select_run`.

Sizes scale to 10 seeds x 250 epochs x 70,000 points: scatter plots show a
fixed random sample of the points and say so on the figure; above
MAX_SEED_LINES seeds, curves turn grey with the median in black.

Read top to bottom: reading a run (`Run`); the panel functions (one ax
each); the page's figures (grids of panels); the HTML page; the command line.
"""
import base64
import functools
import html
import io
import json
import math
import time
from pathlib import Path

import matplotlib

if "ipykernel" not in __import__("sys").modules:   # a notebook keeps its inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import jax.numpy as jnp  # noqa: E402
from dcjax import checkpointing, data, evaluate, launch, methods, metrics, select, selection, study  # noqa: E402
from dcjax import run as run_lib  # noqa: E402

DEFAULT_SELECTOR = select.DEFAULT_SELECTOR   # as `python -m dcjax.select`: the shipped assessor, guarded, where it applies

MAX_POINTS = 5_000        # points per PCA scatter: more only paint over each other
UMAP_POINTS = 2_000       # points per UMAP view (its cost grows with the points, ~1-3 s here)
MAX_SEED_LINES = 10       # above this many seeds a curve per seed is unreadable: grey lines + median
POINTS_SEED = 0           # the scatter sample: fixed, the same points in every panel of a seed
DPI = 90

# The label-free columns of the selection's inputs, in reading order, with
# the direction in which a clustering index is better (others: no direction).
SCORE_PANELS = [*selection.SCORE_COLUMNS, *selection.POOLED, *selection.STABILITY, *selection.AGREEMENT]
HIGHER_IS_BETTER = {"silhouette", "simplified_silhouette", "calinski_harabasz", "pooled_silhouette",
                    "pooled_calinski_harabasz", "mean_pairwise_ari", "mean_pairwise_nmi"}
LOWER_IS_BETTER = {"davies_bouldin", "pooled_davies_bouldin"}


# ============================================================ reading a run

class Run:
    """What the figures read from a workdir, each part read (or computed) on
    first use, so that drawing the losses does not score the run.

    `selector`/`assessor` choose as `python -m dcjax.select` does (by
    default the assessor shipped with dcjax), the epoch per seed and then the
    launch's choice, and write what it writes (selection.json,
    keep_epochs.json, selected_labels.npy)."""

    def __init__(self, workdir, *, selector: str = DEFAULT_SELECTOR, assessor=None, progress: bool = True,
                 launch_selector: str | None = None):
        self.workdir = Path(workdir)
        self.selector, self.assessor, self.progress = selector, assessor, progress
        self.launch_selector = launch_selector
        # A few snapshots kept: the figures of a seed read its selected and the final epoch.
        self.snapshot = functools.lru_cache(maxsize=4)(self._load_snapshot)
        self._losses = {}
        self.record = run_lib.RunRecord(self.workdir)   # the one reader of the run

    @property
    def config(self):
        return self.record.config

    @property
    def seeds(self) -> list[int]:
        return self.record.seeds

    @property
    def phase(self) -> str:
        """The phase whose epochs are candidates (clustering, or pretraining for AE+k-means)."""
        return self.record.selection_phase

    def losses(self, phase: str) -> pd.DataFrame:
        """seed, epoch, loss_<component> per epoch (records.jsonl), read once:
        a 10-seed MNIST run's records hold every batch's loss (tens of MB)."""
        if phase not in self._losses:
            self._losses[phase] = selection.loss_table(self.record, phase)
        return self._losses[phase]

    def loss_components(self, phase: str) -> list[str]:
        """The components the run logged (not the sum loss_table adds where
        there is no 'total'), less a 'total' equal to the one other (DEC's)."""
        path = self.workdir / phase / "records.jsonl"
        if not path.exists():
            return []
        with open(path) as f:
            first = f.readline()
        names = list(json.loads(first)["loss"]) if first else []
        if len(names) == 2 and "total" in names:
            table = self.losses(phase)
            (other,) = set(names) - {"total"}
            if np.array_equal(table["loss_total"], table[f"loss_{other}"]):
                names.remove("total")
        return names

    @functools.cached_property
    def scores(self) -> pd.DataFrame:
        """`dcjax.evaluate`'s table, both phases, with ACC/NMI/ARI where the data
        set has labels: epochs not yet in scores.csv are scored (progress bar)."""
        return selection.scores_table(self.record, labels=True, progress=self.progress)

    @property
    def has_labels(self) -> bool:
        return "acc" in self.scores.columns

    @functools.cached_property
    def label_free(self) -> pd.DataFrame:
        """The selection's inputs for the selection phase: the label-free
        scores, the pooled indices and the losses (`selection.base_table`;
        the label columns are dropped there)."""
        return selection.base_table(self.record, scores=self.scores, phase=self.phase)

    @functools.cached_property
    def selection(self) -> dict:
        """What `python -m dcjax.select` chooses: `selection.select_run`'s
        per-seed result, then `launch.select_launch`'s choice under 'launch'
        (both write selection.json; whatever else select_run adds to it, such
        as a 'chance' verdict, comes along)."""
        result = selection.select_run(self.record, self.selector, self.assessor, progress=self.progress,
                                      feats=selection.features(self.label_free))
        return result | {"launch": launch.select_launch(self.workdir, result, self.launch_selector)}

    @property
    def selected(self) -> dict[int, int]:
        return {s["seed"]: s["epoch"] for s in self.selection["seeds"]}

    @functools.cached_property
    def final_epoch(self) -> int:
        return int(self.scores.loc[self.scores.phase == self.phase, "epoch"].max())

    @functools.cached_property
    def launch_scores(self) -> dict | None:
        """ACC/NMI/ARI of the launch's chosen labels (selected_labels.npy)
        against the ground truth, where the data set has it. Evaluation only."""
        y = data.load_dataset(self.config.dataset).y
        if y is None:
            return None
        chosen = np.load(self.selection["launch"]["labels"])
        scores = metrics.label_based_scores(jnp.asarray(y), jnp.asarray(chosen), self.n_clusters, int(y.max()) + 1)
        return {m: float(v) for m, v in scores.items()}

    @functools.cached_property
    def oracle(self) -> dict[int, int]:
        """Per seed, the epoch of best ACC (labels: evaluation only)."""
        table = self.scores[self.scores.phase == self.phase]
        return {s: study._best_epoch(rows, "acc") for s, rows in table.groupby("seed")}

    @functools.cached_property
    def clustering_records(self) -> list[dict]:
        return checkpointing.load_records(self.workdir, "clustering")

    @functools.cached_property
    def cluster_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """(epochs (E,), sizes (E, S, k)) of the clustering phase: epoch 0 (the
        k-means initialisation) from its snapshot, the rest from records.jsonl.
        Empty when the clustering phase has no trained epochs (AE+k-means)."""
        records = [r for r in self.clustering_records if "cluster_sizes" in r]
        if not records:
            return np.zeros(0, int), np.zeros((0, len(self.seeds), 0), int)
        epochs, sizes = [r["epoch"] for r in records], [r["cluster_sizes"] for r in records]
        with run_lib.quiet_orbax():
            if 0 in checkpointing.list_epochs(self.workdir, "clustering"):
                epochs.insert(0, 0)
                sizes.insert(0, checkpointing.load_snapshot(self.workdir, 0)["cluster_sizes"])
        return np.asarray(epochs), np.asarray(sizes)

    @functools.cached_property
    def n_clusters(self) -> int:
        """The run's number of centres (UNSEEN: its k_init, of which some die)."""
        return self.record.n_centers

    @functools.cached_property
    def active_clusters(self) -> np.ndarray | None:
        """(E, S) clusters alive per clustering epoch, the epochs of
        `cluster_sizes`, for a run whose clusters can die (UNSEEN); else None."""
        epochs, _ = self.cluster_sizes
        records = {r["epoch"]: r["active_clusters"] for r in self.clustering_records if "active_clusters" in r}
        if not len(epochs) or not records or not methods.unseen_enabled(self.config):
            return None
        if epochs[0] == 0:   # the k-means initialisation: its snapshot's mask
            with run_lib.quiet_orbax():
                records[0] = np.asarray(checkpointing.load_snapshot(self.workdir, 0)["active"]).sum(axis=-1)
        return np.asarray([records[int(e)] for e in epochs])

    def _load_snapshot(self, epoch: int) -> dict:
        """A selection-phase snapshot, all seeds. Pretraining snapshots hold no
        clusters: they get the k-means partition that scored them (stored by
        the scoring pass)."""
        with run_lib.quiet_orbax():
            snap = checkpointing.load_snapshot(self.workdir, epoch, self.phase)
        if "assignments" not in snap:
            snap["assignments"] = self.record.load_scored(self.phase, epoch)["labels"].astype(np.int32)
        return snap

    def embedding(self, seed: int, epoch: int) -> dict:
        """One seed's embedding, assignments and (where trained) centers at `epoch`."""
        i = self.seeds.index(seed)
        return {k: v[i] for k, v in self.snapshot(epoch).items() if k in ("embedding", "assignments", "centers")}


def _run(run_or_workdir) -> Run:
    return run_or_workdir if isinstance(run_or_workdir, Run) else Run(run_or_workdir)


# ============================================================ panels: data in, one ax, a Figure out

def _axes(ax, size=(4.5, 3.0)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
    return ax.figure, ax


def seed_colors(seeds) -> dict:
    """One colour per seed, the same in every figure; above MAX_SEED_LINES, grey."""
    seeds = list(seeds)
    if len(seeds) > MAX_SEED_LINES:
        return {s: "0.6" for s in seeds}
    return {s: plt.get_cmap("tab10")(i) for i, s in enumerate(seeds)}


def cluster_colors(k: int) -> list:
    """Distinct colours for k clusters: tab10, tab20, then a sampled rainbow."""
    if k <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(k)]
    if k <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(k)]
    return [plt.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, k)]


def _title(column: str) -> str:
    arrow = " (higher is better)" if column in HIGHER_IS_BETTER else (
        " (lower is better)" if column in LOWER_IS_BETTER else "")
    return column.replace("_", " ") + arrow


MARKS = {  # how an epoch chosen per seed is drawn on its curve
    "selected": dict(marker="o", s=42, edgecolors="black", linewidths=0.8, zorder=5),
    "oracle": dict(marker="*", s=110, edgecolors="black", linewidths=0.6, zorder=6),
}


def plot_curves(table: pd.DataFrame, column: str, *, marks: dict | None = None, ax=None, title=None,
                logy: bool | str = False) -> Figure:
    """One line per seed of `table[column]` over `table.epoch` (a table with
    seed, epoch, column: a loss table or a score table). `marks`, e.g.
    {'selected': {seed: epoch}}, puts a marker on each seed's curve at that
    epoch; the last epoch gets a grey dashed line. Above MAX_SEED_LINES seeds
    the lines are grey, with their median in black. `logy='auto'`: a log
    scale for positive values spanning over a decade."""
    fig, ax = _axes(ax)
    table = table[["seed", "epoch", column]].dropna(subset=[column]).sort_values(["seed", "epoch"])
    seeds = sorted(table.seed.unique())
    colors = seed_colors(seeds)
    many = len(seeds) > MAX_SEED_LINES
    same = table.groupby("epoch")[column].nunique().max() == 1 if len(table) else False
    if same and len(seeds) > 1:   # a cross-seed quantity: the same on every seed's row
        first = table[table.seed == seeds[0]]
        ax.plot(first.epoch, first[column], color="black", lw=1.2, label="all seeds")
    else:
        for s, rows in table.groupby("seed"):
            ax.plot(rows.epoch, rows[column], color=colors[s], lw=0.8 if many else 1.1,
                    alpha=0.6 if many else 0.9, label=f"seed {s}")
        if many:
            median = table.groupby("epoch")[column].median()
            ax.plot(median.index, median.to_numpy(), color="black", lw=1.6, label=f"median of {len(seeds)} seeds")
    for name, epochs in (marks or {}).items():
        points = [(e, table.loc[(table.seed == s) & (table.epoch == e), column], s) for s, e in epochs.items()]
        points = [(e, v.iloc[0], s) for e, v, s in points if len(v)]
        if points:   # in each seed's colour; the legend shows the marker alone, in white
            ax.scatter([p[0] for p in points], [p[1] for p in points],
                       color=["black" if many else colors[p[2]] for p in points], **MARKS.get(name, {}))
            ax.scatter([], [], color="white", label=name, **MARKS.get(name, {}))
    if len(table):
        ax.axvline(table.epoch.max(), color="0.5", ls="--", lw=0.8)
    values = table[column].to_numpy(float)
    if logy == "auto":
        logy = len(values) > 0 and values.min() > 0 and values.max() / values.min() > 10
    if logy:
        ax.set_yscale("log")
    else:   # plain numbers, as many digits as the ticks need: no "+1" or "1e6" above the axes, under the title
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.set_title(title or _title(column), fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if column.startswith("n_") and len(values):   # a count: whole numbers on its axis, at least two
        if values.max() - values.min() < 2:
            ax.set_ylim(values.min() - 0.5, values.max() + 1.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    ax.grid(alpha=0.25)
    return fig


def plot_cluster_sizes(epochs, sizes, *, active=None, selected: int | None = None, ax=None, title=None) -> Figure:
    """Stacked area of the cluster sizes of one seed, as fractions of the
    points: epochs (E,), sizes (E, k). A cluster that empties is a band
    that thins to nothing; a red x on the axis marks the epoch from which it
    stays empty, the count at the end is in the title, and the selected
    epoch gets a dashed line. `active` (E,): for a run whose clusters die
    (UNSEEN), the number still alive, a black step line on the right axis."""
    fig, ax = _axes(ax)
    epochs, sizes = np.asarray(epochs), np.asarray(sizes, float)
    k = sizes.shape[1]
    fractions = sizes / np.maximum(sizes.sum(axis=1, keepdims=True), 1)
    ax.stackplot(epochs, fractions.T, colors=cluster_colors(k), linewidth=0)
    for c in np.flatnonzero(sizes[-1] == 0):
        alive = np.flatnonzero(sizes[:, c] > 0)   # a cluster empty from the start is marked at the start
        died = epochs[min(alive[-1] + 1, len(epochs) - 1)] if len(alive) else epochs[0]
        ax.plot([died], [0.02], marker="X", color="tab:red", markeredgecolor="white", markersize=8, zorder=5)
    if selected is not None:   # a line, and a marker above the axes that shows even at epoch 0
        ax.axvline(selected, color="black", ls="--", lw=1.0)
        ax.plot([selected], [1.0], marker="v", color="black", markersize=6, clip_on=False)
    empty = int((sizes[-1] == 0).sum())
    smallest = fractions[-1][sizes[-1] > 0].min() if (sizes[-1] > 0).any() else 0.0
    if active is None:
        end, alarm = f"{k - empty}/{k} clusters non-empty", empty > 0
    else:   # dying is what UNSEEN does; an alive cluster left empty is the alarm
        active = np.asarray(active)
        right = ax.twinx()
        right.step(epochs, active, where="post", color="black", lw=1.4,   # a white halo: readable on any band
                   path_effects=[patheffects.withStroke(linewidth=3, foreground="white")])
        right.set_ylim(0, k)
        right.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        right.set_ylabel("active clusters", fontsize=7)
        right.tick_params(labelsize=7)
        end, alarm = f"{int(active[-1])} of {int(active[0])} clusters active", k - empty < active[-1]
    ax.set_title((title or "") + f"\nend: {end}, smallest {100 * smallest:.1f}%",
                 fontsize=8, color="tab:red" if alarm else "black")
    ax.set(xlim=(epochs[0], epochs[-1]), ylim=(0, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    return fig


def sample_points(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """The fixed subset of the points a scatter shows (all when n <= max_points)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(POINTS_SEED).choice(n, max_points, replace=False))


def project(z: np.ndarray, method: str = "pca", max_points: int | None = None):
    """(2-D coordinates of the sampled points, their indices, a function that
    projects other points, or None). PCA is fitted on all points and projects
    the centres too; UMAP is fitted on the sample only."""
    z = np.asarray(z, np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA
        idx = sample_points(len(z), max_points or MAX_POINTS)
        pca = PCA(n_components=2, random_state=0).fit(z)
        return pca.transform(z[idx]), idx, pca.transform
    if method == "umap":
        import umap   # optional: pip install "dcjax[umap]"
        idx = sample_points(len(z), max_points or UMAP_POINTS)
        return umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(z[idx]), idx, None
    raise ValueError(f"method must be 'pca' or 'umap', got {method!r}")


def plot_embedding(embedding, assignments, *, centers=None, method: str = "pca", max_points: int | None = None,
                   ax=None, title=None) -> Figure:
    """A 2-D view of one embedding (N, e), coloured by cluster (the colours of
    `plot_cluster_sizes`); PCA also shows the non-empty clusters' centres (x).
    At most `max_points` points (default MAX_POINTS, UMAP_POINTS for UMAP),
    a fixed random sample; the figure says how many of how many."""
    fig, ax = _axes(ax, size=(4, 4))
    assignments = np.asarray(assignments)
    k = max(int(assignments.max()) + 1, 0 if centers is None else len(centers))
    xy, idx, transform = project(embedding, method, max_points)
    palette = np.asarray(cluster_colors(k))
    ax.scatter(xy[:, 0], xy[:, 1], c=palette[assignments[idx]], s=2 if len(idx) > 2000 else 5,
               alpha=0.6, linewidths=0, rasterized=True)
    if centers is not None and transform is not None:
        live = np.bincount(assignments, minlength=k)[: len(centers)] > 0
        c2 = transform(np.asarray(centers, np.float32)[live])
        ax.scatter(c2[:, 0], c2[:, 1], marker="x", color="black", s=22, linewidths=0.9, alpha=0.8)
    n = len(assignments)
    shown = f"all {n:,} points" if len(idx) == n else f"{len(idx):,} of {n:,} points (random sample)"
    ax.text(0.01, 0.01, shown, transform=ax.transAxes, fontsize=7, va="bottom", color="0.3")
    ax.set_title(title or method.upper(), fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
    return fig


# ============================================================ the page's figures (grids of panels)

def _grid(n_panels: int, ncols: int, panel=(3.3, 2.4)):
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols + 1.4, panel[1] * nrows + 0.4),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n_panels:]:
        ax.remove()
    return fig, list(axes.flat[:n_panels])


def _legend(fig, axes):
    """One legend for the figure: seeds and marks, from the panel with most entries."""
    best = max(axes, key=lambda a: len(a.get_legend_handles_labels()[1]))
    handles, labels = best.get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)


def loss_figure(run) -> Figure:
    """Every loss component of every phase, one panel each, a line per seed."""
    run = _run(run)
    panels = [(p, c) for p in checkpointing.PHASES for c in run.loss_components(p)]
    fig, axes = _grid(len(panels), 4)
    for ax, (phase, component) in zip(axes, panels):
        plot_curves(run.losses(phase), f"loss_{component}", ax=ax, title=f"{phase}: {component} loss", logy="auto")
    _legend(fig, axes)
    return fig


def score_columns(run) -> list[str]:
    """The label-free columns this run has values for (the method decides,
    e.g. hard methods have no soft-assignment confidence); the number of
    active clusters only where clusters can die (UNSEEN), else it is k throughout."""
    run = _run(run)
    table = run.label_free
    dying = methods.unseen_enabled(run.config)
    return [c for c in SCORE_PANELS if c in table and table[c].notna().any() and (dying or c != "n_active_clusters")]


def scores_figure(run) -> Figure:
    """Each label-free score over the selection phase's epochs, a line per
    seed, the selected epoch of each seed marked."""
    run = _run(run)
    columns = score_columns(run)
    fig, axes = _grid(len(columns), 4)
    for ax, column in zip(axes, columns):
        plot_curves(run.label_free, column, marks={"selected": run.selected}, ax=ax,
                    title=_title(column) + ("\n(the noise detector's column)" if column == selection.NOISE_COLUMN
                                            else ""))
    _legend(fig, axes)
    return fig


def cluster_sizes_figure(run) -> Figure | None:
    """A stacked area of cluster sizes per seed (None without clustering epochs)."""
    run = _run(run)
    epochs, sizes = run.cluster_sizes
    if len(epochs) < 2:
        return None
    active = run.active_clusters
    fig, axes = _grid(len(run.seeds), 5, panel=(2.9, 2.3))
    for i, (ax, seed) in enumerate(zip(axes, run.seeds)):
        plot_cluster_sizes(epochs, sizes[:, i], ax=ax, title=f"seed {seed}",
                           active=None if active is None else active[:, i],
                           selected=run.selected.get(seed) if run.phase == "clustering" else None)
    return fig


def embeddings_figure(run, method: str = "pca") -> Figure:
    """Per seed, its selected and its final embedding side by side (three seeds per row)."""
    run = _run(run)
    final = run.final_epoch
    fig, axes = _grid(2 * len(run.seeds), 6, panel=(2.5, 2.6))
    from tqdm.auto import tqdm
    for i, seed in enumerate(tqdm(run.seeds, desc=f"{method} views", unit="seed", disable=not run.progress,
                                  leave=False)):
        chosen = run.selected[seed]
        for ax, (label, epoch) in zip(axes[2 * i: 2 * i + 2], (("selected", chosen), ("final", final))):
            same = " = final" if label == "selected" and epoch == final else ""
            plot_embedding(**run.embedding(seed, epoch), method=method, ax=ax,
                           title=f"seed {seed}, {label}{same}: epoch {epoch} ({method.upper()})")
    return fig


def evaluation_figure(run) -> Figure:
    """ACC, NMI, ARI over the selection phase's epochs, per seed, with the
    oracle epoch (best ACC, which no label-free rule can know) and the
    selected one marked. Evaluation only: the labels serve nothing else."""
    run = _run(run)
    table = run.scores[run.scores.phase == run.phase]
    fig, axes = _grid(3, 3, panel=(3.8, 2.8))
    launch_scores = run.launch_scores or {}
    for ax, metric in zip(axes, evaluate.LABEL_BASED):
        plot_curves(table, metric, marks={"selected": run.selected, "oracle": run.oracle}, ax=ax,
                    title=metric.upper())
        if metric in launch_scores:   # one partition for the launch: a level, not a curve
            ax.axhline(launch_scores[metric], color="black", ls=":", lw=1.3, label="the launch's choice")
    _legend(fig, axes)
    return fig


# ============================================================ the HTML page

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
.meta { color: #555; } .note { color: #555; font-size: 0.9em; max-width: 80em; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } th:last-child { text-align: left; } td.why { text-align: left; max-width: 60em; font-size: 0.9em; }
.chance { background: #fde2e2; border: 2px solid #c62828; color: #8e0000; font-weight: bold; font-size: 1.15em;
          padding: 0.7em 1em; margin: 0.8em 0; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: 0.5em 1em; margin: 0.6em 0; }
.eval { background: #f3f6fb; border: 1px solid #c8d4ea; padding: 0 1em 1em; margin-top: 2em; }
pre { background: #f7f7f7; padding: 0.6em; font-size: 0.8em; overflow-x: auto; }
nav a { margin-right: 1em; }
"""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


class Raw(str):
    """A table cell that is HTML already (escaped where it holds text)."""


def _table(rows: list[dict], classes: dict | None = None) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td class='{(classes or {}).get(k, '')}'>"
                                     f"{v if isinstance(v, Raw) else html.escape(str(v))}</td>"
                                     for k, v in r.items()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x) -> str:
    return f"{100 * x:.1f}" if x is not None and np.isfinite(x) else "–"


def _why(why: str) -> Raw:
    """The selection's why, its verdict shown and the assessor's feature list folded away."""
    verdict, _, features = why.partition("; top features: ")
    if not features:
        return Raw(html.escape(why))
    return Raw(f"<details><summary>{html.escape(verdict)}</summary>top features: {html.escape(features)}</details>")


def seed_rows(run: Run) -> list[dict]:
    """The label-free per-seed summary: selection, clusters at the selected and final epochs."""
    rows = []
    for s in run.selection["seeds"]:
        sizes = {e: np.bincount(run.embedding(s["seed"], e)["assignments"], minlength=run.n_clusters)
                 for e in {s["epoch"], s["final_epoch"]}}
        ac = s["noise_autocorr"]
        init = " (k-means init)" if run.phase == "clustering" and s["epoch"] == 0 else ""
        rows.append({
            "seed": s["seed"], "selected epoch": f"{s['epoch']}{init}", "final epoch": s["final_epoch"],
            "non-empty clusters (selected / final)": f"{(sizes[s['epoch']] > 0).sum()} / "
                                                     f"{(sizes[s['final_epoch']] > 0).sum()} of {run.n_clusters}",
            "smallest cluster % (selected / final)": " / ".join(
                _pct(sizes[e][sizes[e] > 0].min() / sizes[e].sum()) for e in (s["epoch"], s["final_epoch"])),
            "noise autocorr.": "–" if ac is None else f"{ac:.2f}" + (" ⚠" if s["noise_dominated"] else ""),
            "model state": "stored" if s["state_present"] else "replayed on load",
            "why": _why(s["why"])})
    return rows


def evaluation_rows(run: Run) -> list[dict]:
    """Per seed, ACC/NMI/ARI (%) at the selected, final and oracle epochs,
    and the k-means of the final embedding (summary.json, as ClustPy reports)."""
    table = run.scores[run.scores.phase == run.phase].set_index(["seed", "epoch"])
    summary = json.loads((run.workdir / "summary.json").read_text()) if (run.workdir / "summary.json").exists() \
        else {"seeds": []}
    kmeans = {r["seed"]: r.get("kmeans_on_embedding", {}) for r in summary["seeds"]}
    rows = []
    for s in run.seeds:
        sel, fin, orc = run.selected[s], run.final_epoch, run.oracle[s]
        row = {"seed": s, "selected": sel, "oracle": orc}
        for m in evaluate.LABEL_BASED:
            row[f"{m.upper()} selected / final / oracle"] = " / ".join(
                _pct(table.at[(s, e), m]) for e in (sel, fin, orc))
        row["regret (ACC points)"] = f"{100 * (table.at[(s, orc), 'acc'] - table.at[(s, sel), 'acc']):.2f}"
        row["k-means on final embedding ACC"] = _pct(kmeans.get(s, {}).get("acc", np.nan))
        rows.append(row)
    means = {m: [np.mean([table.at[(s, e[s]), m] for s in run.seeds]) for e in
                 (run.selected, {s: run.final_epoch for s in run.seeds}, run.oracle)] for m in evaluate.LABEL_BASED}
    rows.append({"seed": "mean", "selected": "", "oracle": "",
                 **{f"{m.upper()} selected / final / oracle": " / ".join(_pct(v) for v in means[m])
                    for m in evaluate.LABEL_BASED},
                 "regret (ACC points)": f"{100 * (means['acc'][2] - means['acc'][0]):.2f}",
                 "k-means on final embedding ACC": _pct(np.mean([kmeans.get(s, {}).get("acc", np.nan)
                                                                 for s in run.seeds]))})
    if run.launch_scores:
        rows.append({"seed": "launch's choice", "selected": run.selection["launch"]["candidate"], "oracle": "",
                     **{f"{m.upper()} selected / final / oracle": _pct(run.launch_scores[m])
                        for m in evaluate.LABEL_BASED},
                     "regret (ACC points)": "", "k-means on final embedding ACC": ""})
    return rows


def chance_verdict(run: Run) -> tuple[str, bool] | None:
    """(message, alarm: it looks like chance, or the seeds came apart) of the
    run's chance test, when selection.json has one (`dcjax.select` adds it; the report only shows it)."""
    verdict = run.selection.get("chance")
    if not verdict or not verdict.get("message"):
        return None
    alarm = verdict.get("looks_like_chance", verdict.get("better_than_chance") is False) \
        or verdict.get("came_apart", False)   # the seeds agreed at the start of clustering and no longer do
    return str(verdict["message"]), bool(alarm)


def warnings(run: Run) -> list[str]:
    """What a reader must know before trusting a number on the page."""
    status = run.selection.get("status") or {}
    out = [status["message"] + "."] if status.get("message") else []
    for s in run.selection["seeds"]:
        if s.get("diverged"):
            d = s["diverged"]
            out.append(f"seed {s['seed']} diverged (non-finite loss) in {d['phase']} epoch {d['epoch']}: its state "
                       f"stayed at epoch {d['last_finite_epoch']} of {d['phase']} (its later points on the curves "
                       "are copies of that epoch), so later epochs are not candidates.")
    if run.selection.get("damaged_epochs"):
        out.append(f"epochs {run.selection['damaged_epochs']} of the {run.phase} phase left out: their snapshot is "
                   "damaged (unreadable), so they are neither scored nor candidates.")
    noisy = [s for s in run.selection["seeds"] if s["noise_dominated"]]
    if noisy:
        out.append(f"noise-dominated seed(s) {', '.join(str(s['seed']) for s in noisy)}: the lag-1 "
                   f"autocorrelation of the {selection.NOISE_COLUMN} over epochs is below {selection.NOISE_AUTOCORR} "
                   "(" + ", ".join(f"{s['noise_autocorr']:.2f}" for s in noisy) + "), so their partitions change in "
                   "quality at random from epoch to epoch: no epoch of them can be told apart without labels.")
    epochs, sizes = run.cluster_sizes
    if len(epochs):   # UNSEEN's dead clusters are empty by design: only active ones count
        alive = run.active_clusters[-1] if run.active_clusters is not None else [sizes.shape[2]] * len(run.seeds)
        empty = {s: int(alive[i] - (sizes[-1, i] > 0).sum()) for i, s in enumerate(run.seeds)}
        if any(n > 0 for n in empty.values()):
            out.append("empty clusters at the final epoch: " + ", ".join(
                f"seed {s}: {n}" for s, n in empty.items() if n > 0) + " of the "
                + ("active ones." if run.active_clusters is not None else f"{sizes.shape[2]}."))
    return out


def launch_part(run: Run) -> str:
    """The launch's choice (`dcjax.launch`): which seed and epoch, or which
    consensus, and why, as `python -m dcjax.select` prints it."""
    choice = run.selection["launch"]
    if choice["selector"] is None:
        text = f"One seed: its selected epoch {choice['epoch']}."
    else:
        what = f"the {choice['candidate']}" if choice["seed"] == -1 else \
            f"seed {choice['seed']}, epoch {choice['epoch']}"
        text = (f"<b>{html.escape(what)}</b>, of {choice['n_candidates']} candidates (every seed x epoch of the "
                f"{html.escape(run.phase)} phase and two consensus partitions), launch selector "
                f"<code>{html.escape(choice['selector'])}</code>. Why: {html.escape(choice['why'])}.")
    scores = choice.get("scores") or {}
    return (f"<h2 id='launch'>The launch's choice (label-free)</h2><p>{text}</p>"
            + _table([{k.replace("_", " "): "–" if v is None else f"{v:.4f}" for k, v in scores.items()}])
            + f"<p class='note'>Its labels, one per data row: {html.escape(str(choice['labels']))}.</p>")


def _figures(run: Run, umap: bool):
    """(id, section title, caption, drawing function) of every figure the page may hold."""
    views = [("embeddings_pca", "2-D views: PCA", "Per seed, the selected and the final epoch's embedding "
              "(PCA fitted on all points), coloured by cluster (the colours of the cluster sizes); x: non-empty "
              "clusters' centres.", lambda: embeddings_figure(run, "pca"))]
    if umap:
        views.append(("embeddings_umap", "2-D views: UMAP", f"The same embeddings through UMAP, fitted on a random "
                      f"sample of at most {UMAP_POINTS:,} points per view.", lambda: embeddings_figure(run, "umap")))
    return [
        ("losses", "Loss curves", "Every loss component per phase (epoch means), one line per seed; log scale "
         "where the values span over a decade; dashed: the last epoch.", lambda: loss_figure(run)),
        ("scores", "Label-free scores per epoch", f"The columns dcjax.select reads, {run.phase} phase, one line "
         "per seed; dots: the selected epoch of each seed; dashed: the final epoch. Mean pairwise ARI/NMI "
         "compare the seeds with each other: one line. 'Higher/lower is better' is each index's own convention: "
         "an embedding that collapses onto its centres improves the indices computed in it (silhouette, "
         "Davies-Bouldin, ...) whatever the clustering's quality.", lambda: scores_figure(run)),
        ("cluster_sizes", "Cluster sizes over epochs", "Per seed, the fraction of the points in each cluster "
         "(stacked; a band that thins out is a dying cluster); red x: the epoch from which a cluster stays "
         "empty; dashed line and triangle: the selected epoch. Epoch 0 is the k-means initialisation."
         + (" Black step line, right axis: the clusters still active (UNSEEN removes a cluster that falls below "
            f"t = {run.config.unseen.t:g} of its reference size)." if methods.unseen_enabled(run.config) else ""),
         lambda: cluster_sizes_figure(run)),
        *views,
    ]


def write_report(workdir, *, selector: str = DEFAULT_SELECTOR, assessor=None, umap: bool | None = None,
                 progress: bool = True, launch_selector: str | None = None) -> Path:
    """Write `<workdir>/report.html` and the PNGs in `<workdir>/report/`; return the page's path.
    `umap`: None draws UMAP views when umap-learn is installed."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    run = Run(workdir, selector=selector, assessor=assessor, progress=progress, launch_selector=launch_selector)
    if umap is None:
        import importlib.util
        umap = importlib.util.find_spec("umap") is not None
    run.selection   # scores the epochs not yet scored, then selects (progress bars)
    figures = _figures(run, umap)
    if run.has_labels:
        figures.append(("evaluation", "ACC, NMI, ARI per epoch", "Per seed; dots: selected epoch, stars: oracle "
                        "epoch (best ACC); dashed: the final epoch.", lambda: evaluation_figure(run)))
    out_dir = run.workdir / "report"
    out_dir.mkdir(exist_ok=True)
    images = {}
    for fid, _, _, draw in tqdm(figures, desc="report figures", unit="figure", disable=not progress):
        fig = draw()
        if fig is not None:
            images[fid] = _png(fig)
            checkpointing.write_bytes_atomic(out_dir / f"{fid}.png", images[fid])

    def section(fid, title, caption):
        if fid not in images:
            return f"<h2 id='{fid}'>{html.escape(title)}</h2><p class='note'>Not drawn: no clustering epochs " \
                   "were trained (AE+k-means clusters its pretrained embedding once).</p>"
        data = base64.b64encode(images[fid]).decode()
        return (f"<h2 id='{fid}'>{html.escape(title)}</h2><p class='note'>{html.escape(caption)}</p>"
                f"<img id='img-{fid}' alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")

    c = run.config
    trained = evaluate.training_seconds(run.workdir)
    n_points = run.snapshot(run.final_epoch)["embedding"].shape[1]
    head = (f"<h1>dcjax run report: {html.escape(methods.algorithm_label(c))} on {html.escape(str(c.dataset.name))}, "
            f"{len(run.seeds)} seed{'s' * (len(run.seeds) > 1)}</h1>"
            f"<p class='meta'>{html.escape(str(run.workdir.absolute()))} · {n_points:,} points · "
            f"{'k_init' if methods.unseen_enabled(c) else 'k'} = {run.n_clusters} · seeds {run.seeds[0]}–{run.seeds[-1]} · epochs: pretraining "
            f"{c.pretrain.epochs}, clustering {c.clustering.epochs} · training time "
            + ", ".join(f"{p} {s / 60:.1f} min" for p, s in trained.items())
            + f" · report written {time.strftime('%Y-%m-%d %H:%M')}</p>")
    nav = "<nav><a href='#selection'>Selection</a><a href='#launch'>Launch</a>" + "".join(
        f"<a href='#{fid}'>{html.escape(t)}</a>" for fid, t, _, _ in figures) + "<a href='#config'>Config</a></nav>"
    chance = chance_verdict(run)
    warn = "".join(f"<div class='warn'>⚠ {html.escape(w)}</div>" for w in warnings(run))
    if chance and chance[1]:   # above everything: no number on the page means much then
        warn = f"<div class='chance'>{html.escape(chance[0])}</div>" + warn
    sel = run.selection
    selection_part = (f"<h2 id='selection'>Selected epochs (label-free)</h2><p class='note'>"
                      f"As <code>python -m dcjax.select --selector {html.escape(sel['selector'])}</code>"
                      + (f" with the assessor {html.escape(sel['assessor'])}" if sel.get("assessor") else "")
                      + (f". By default here {html.escape(sel['default_because'])}" if sel.get("default_because") else "")
                      + f"; candidates: the {run.phase} phase's epochs. Noise autocorr.: lag-1 autocorrelation of "
                      f"the pooled silhouette over epochs (below {selection.NOISE_AUTOCORR}: noise-dominated, ⚠)."
                      + (f" {html.escape(chance[0])}." if chance and not chance[1] else "") + "</p>"
                      + _table(seed_rows(run), {"why": "why"}) + launch_part(run))
    body = [section(fid, title, caption) for fid, title, caption, _ in figures if fid != "evaluation"]
    body.append(explanation_part(run))
    if run.has_labels:
        body.append("<div class='eval'><h2>Evaluation only: scores against the ground-truth labels</h2>"
                    "<p class='note'>Nothing above reads the labels: neither the scores nor the selection. These "
                    "numbers show how the label-free choice fared; the oracle epoch is one no label-free rule "
                    "can know.</p>" + _table(evaluation_rows(run))
                    + section("evaluation", "ACC, NMI, ARI per epoch",
                              "Per seed; dots: selected epoch, stars: oracle epoch (best ACC); dashed: final epoch.")
                    + "</div>")
    config_json = html.escape(json.dumps(json.loads(c.to_json_best_effort()), indent=2))
    footer = (f"<h2 id='config'>Config</h2><details><summary>config.json</summary><pre>{config_json}</pre></details>"
              f"<p class='note'>Figures also in {html.escape(str(out_dir))}/. Written in "
              f"{time.perf_counter() - t0:.0f} s by <code>python -m dcjax.report --workdir "
              f"{html.escape(str(run.workdir))}</code>.</p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>dcjax report: {html.escape(str(run.workdir))}"
            f"</title><style>{CSS}</style></head><body>{head}{nav}{warn}{selection_part}{''.join(body)}{footer}"
            "</body></html>")
    path = run.workdir / "report.html"
    checkpointing.write_text_atomic(path, page)   # a reader never sees half a page
    return path


def explanation_part(run: Run, max_tags: int = 6) -> str:
    """'What each cluster means': the launch's chosen partition explained by
    tags (`dcjax.explain`: DDC's ILP and top-k, with TC and ITF), from the
    run's tags or quantile bins of its features. Label-free: purity is left
    to `python -m dcjax.explain`."""
    from dcjax import explain

    head = "<h2 id='explain'>What each cluster means (tags)</h2>"
    try:
        df = explain.explain_run(run.workdir)
    except (explain.ExplainError, OSError, ValueError) as e:
        return head + f"<p class='note'>No explanation: {html.escape(str(e))}</p>"
    table = explain.explanation_table(df.groupby(["method", "cluster"]).head(max_tags))
    rows = [{"method": r.method, "cluster": r.cluster, "size": r.size, "tags (share of members)": r.tags,
             "TC": f"{r.tc:.2f}", "ITF": f"{r.itf:.2f}"} for r in table.itertuples()]
    beta = f", beta={df.attrs['beta']:g}" if "beta" in df.attrs else ""
    return (head + f"<p class='note'>Tags: {html.escape(df.attrs['tags'])}. ilp: DDC's explanations (fewest tags "
            f"covering alpha={df.attrs['alpha']:g} tags per member{beta}); topk: each cluster's "
            f"{df.attrs['top_k']} commonest tags. TC: mean share of members carrying an explanation's tag; ITF: "
            f"how few clusters share its tags (log K = {np.log(df.attrs['k']):.2f} when none). As "
            f"<code>python -m dcjax.explain --workdir {html.escape(str(run.workdir))}</code>.</p>" + _table(rows))


# ============================================================ command line

def define_flags(fv) -> None:
    from absl import flags
    select.define_selection_flags(fv)
    flags.DEFINE_bool("umap", None, "UMAP views (default: when umap-learn is installed); --noumap skips them",
                      flag_values=fv)
    flags.DEFINE_bool("progress", True, "progress bar while scoring new epochs", flag_values=fv)


def main(argv: list[str] | None = None, prog: str = "python -m dcjax.report"):
    """`dcjax report`: `argv` without the program name (default: sys.argv[1:])."""
    args = select.parse_selection_flags(prog, define_flags, argv, __doc__)
    with select.one_line_errors(prog):
        path = write_report(args.workdir, selector=args.selector, assessor=args.assessor, umap=args.umap,
                            progress=args.progress, launch_selector=args.launch_selector)
    print(f"wrote {path} (figures in {path.parent / 'report'}/)")
    return path


if __name__ == "__main__":
    main()
