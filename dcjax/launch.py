"""Choose one clustering for a whole launch, without labels: the best seed x
epoch of its S seeds, or their consensus.

    python -m dcjax.select --workdir runs/x      # per-seed lines, then the launch's choice

Per-seed selection (`dcjax.selection`) picks an epoch within each seed; its
ceiling is small (oracle epoch - final epoch: +1.3 ACC points on the study's
230 pairs) while seeds of one launch differ by several points. Which seed's
clustering to use is the bigger question, and within a run no label-free
score answers it (each seed's scores live in its own embedding). What is
comparable across seeds is how the seeds' partitions relate to each other.

Read top to bottom. Nothing here reads a label:

1. Candidates. `read_partitions(workdir)`: every (seed, epoch) partition of
   the selection phase, (E, S, N), read through `dcjax.checkpointing` (the
   run's own assignments; for AE+k-means the k-means of each pretraining
   embedding, as `dcjax.evaluate` computes it), and the reference embeddings
   (each seed's first and last epoch).
2. The consensus. `consensus_partition`: evidence accumulation. The
   co-association matrix of P partitions, C = B B^T / P with B the (N, P k)
   one-hot matrix of all their clusters, is cut into k clusters by spectral
   clustering. Its top singular vectors come from the degree-normalised B,
   so the N x N matrix is never built (N = 70,000 would need 20 GB).
3. Scores comparable across seeds, on a fixed sample of points:
   `cross_seed_nmi` (Strehl & Ghosh's supra-consensus: mean NMI to the
   other seeds' partitions), `coassoc_divergence` (as DISCOTEC, Ohl &
   Lindsten 2025: squared Frobenius distance between the candidate's and the
   launch's co-association matrices, from k x k contingency tables) and
   `launch_silhouette` (silhouette in every seed's reference embeddings);
   `size_entropy`, how even the candidate's cluster sizes are (1 = all
   equal); and, from the run's score table, each seed's own-space
   silhouette at the final epoch (`final_silhouette`).
4. Launch selectors: `LAUNCH_SELECTORS[name](table)` -> the chosen row.
5. `select_launch(workdir, per_seed)`: what `python -m dcjax.select` does
   after the per-seed lines. It adds the choice to selection.json and writes
   the chosen labels to <workdir>/selected_labels.npy.
"""
import functools
import json
import logging
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import lax

from dcjax import checkpointing, metrics, selection
from dcjax import config as config_lib
from dcjax import run as run_lib
from dcjax import workdir as workdir_lib

log = logging.getLogger(__name__)

AGREEMENT_POINTS = 2000    # agreement and divergence on a fixed point sample: contingencies of n points
SILHOUETTE_POINTS = selection.POOLED_POINTS   # the silhouette is O(n^2)
REFERENCE_EVERY = selection.POOLED_EVERY      # reference partitions: every 10th epoch, and the last
SAMPLE_KEY = run_lib.SAMPLE_KEY                # the same points for every candidate
CONSENSUS_KEY = 0                             # the consensus's k-means seed


# ============================================================ 1. candidates

class Partitions(NamedTuple):
    """A launch's candidates, label-free: labels (E, S, N) of every epoch and
    seed of the selection phase; spaces (F, N, e), the reference embeddings."""
    labels: np.ndarray
    spaces: np.ndarray
    seeds: list
    epochs: list
    phase: str
    n_clusters: int        # label range: the data set's k, or UNSEEN's k_init
    fixed_k: bool = True   # False for UNSEEN: each partition has its own number of clusters


def read_partitions(workdir, phase: str | None = None) -> Partitions:
    """Every candidate partition of a run, as the scoring pass stored them
    (`run.RunRecord.save_scored`: a pretraining epoch's is the k-means that
    its score row describes), and the first and last epochs' embeddings at
    the launch silhouette's points (NaN elsewhere, as `load_partitions`
    gives them). Reads no snapshot and computes no k-means."""
    run = selection._record(workdir)
    phase = phase or run.selection_phase
    epochs, labels = run.partitions(phase)
    if not epochs:
        raise run_lib.RunNotReadyError(f"{run.workdir}: no scored {phase} epoch: run `python -m dcjax.select "
                                       f"--workdir {run.workdir}` (it scores the run) first")
    rows = run_lib.sample_rows(run.n_rows)   # where the scoring pass kept the embeddings (SILHOUETTE_POINTS of them)
    spaces = []
    for epoch in (epochs[0], epochs[-1]):
        sample = run.load_scored(phase, epoch)["sample"]         # (S, SAMPLE_POINTS, e)
        full = np.full((sample.shape[0], run.n_rows, sample.shape[-1]), np.nan, np.float32)
        full[:, rows] = sample
        spaces.extend(full)
    k = run.n_centers
    dtype = np.uint8 if k <= 256 else np.int32
    return Partitions(labels.astype(dtype), np.stack(spaces), run.seeds, epochs, phase, k, fixed_k=run.fixed_k)


def save_partitions(parts: Partitions, path) -> Path:
    """A compact copy for studies without the run: labels as uint8 (S, N, E),
    where a point's label over consecutive epochs rarely changes, so zlib
    shrinks it ~10x; the embeddings as float16, and only at the points the
    launch silhouette reads (`SILHOUETTE_POINTS` of N): the full embeddings
    were ~90% of a file and nothing else reads them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _sample(parts.labels.shape[-1], SILHOUETTE_POINTS)
    np.savez_compressed(path, labels=np.transpose(parts.labels, (1, 2, 0)).astype(np.uint8),
                        spaces=parts.spaces[:, rows].astype(np.float16), space_rows=rows,
                        seeds=np.asarray(parts.seeds), epochs=np.asarray(parts.epochs), phase=parts.phase,
                        n_clusters=parts.n_clusters, fixed_k=parts.fixed_k)
    return path


def load_partitions(path) -> Partitions:
    """A copy `save_partitions` wrote. The embeddings come back (F, N, e) with
    NaN at the points it did not keep, so a score that reads them says so."""
    with np.load(path) as f:
        labels = np.transpose(f["labels"], (2, 0, 1))
        kept = f["spaces"].astype(np.float32)
        if "space_rows" in f:   # copies written before kept every point
            spaces = np.full((kept.shape[0], labels.shape[-1], kept.shape[-1]), np.nan, np.float32)
            spaces[:, f["space_rows"]] = kept
        else:
            spaces = kept
        return Partitions(labels, spaces, f["seeds"].tolist(), f["epochs"].tolist(), str(f["phase"]),
                          int(f["n_clusters"]), fixed_k=bool(f["fixed_k"]) if "fixed_k" in f else True)


# ============================================================ 2. the consensus

def consensus_partition(partitions: np.ndarray, n_clusters: int, key: int = CONSENSUS_KEY) -> np.ndarray:
    """The consensus of P partitions (P, N) -> (N,): evidence accumulation
    (Fred & Jain 2005), cut by normalised spectral clustering (Ng, Jordan &
    Weiss 2001). The co-association C = B B^T / P (B: (N, P k) cluster
    indicators) has degrees d = B (B^T 1) / P, and the top-k eigenvectors of
    D^-1/2 C D^-1/2 are the top-k left singular vectors of D^-1/2 B: an
    N x Pk sparse matrix, never N x N. Rows normalised, then k-means. The
    labels may range beyond n_clusters (UNSEEN's partitions of k_init centres)."""
    from scipy import sparse
    from sklearn.cluster import KMeans
    from sklearn.utils.extmath import randomized_svd
    p, n = partitions.shape
    width = max(n_clusters, int(partitions.max()) + 1)   # columns per partition
    columns = (np.arange(p)[:, None] * width + partitions).T.ravel()
    b = sparse.csr_matrix((np.ones(n * p), columns, np.arange(0, n * p + 1, p)), shape=(n, p * width))
    degree = b @ np.asarray(b.sum(axis=0)).ravel() / p
    u, _, _ = randomized_svd(sparse.diags(1 / np.sqrt(degree)) @ b, n_clusters, random_state=key)
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters, n_init=10, random_state=key).fit_predict(u).astype(partitions.dtype)


# ============================================================ 3. scores comparable across seeds

@functools.partial(jax.jit, static_argnames=("n_clusters",))
def agreement_scores(candidates, candidate_seeds, references, reference_seeds, n_clusters: int) -> dict:
    """candidates (C, n), references (R, n): each candidate's mean NMI to
    the references of OTHER seeds ('cross_seed_nmi'; a seed's own epochs
    agree with each other by construction) and its co-association terms:
    'self' = sum_c n_c^2 / n^2 and 'cross' = mean_r ||M_cr||^2 / n^2, M_cr
    its contingency table with reference r. ||A A^T - C_R||_F^2 / n^2 =
    self - 2 cross + const (`coassoc_divergence`). Seed -1: belongs to none."""
    def one(args):
        labels, seed = args
        nmi = jax.vmap(metrics.normalized_mutual_info, (None, 0, None, None))(labels, references, n_clusters,
                                                                               n_clusters)
        others = (reference_seeds != seed).astype(jnp.float32)
        table = jax.vmap(metrics.contingency_matrix, (None, 0, None, None))(labels, references, n_clusters,
                                                                             n_clusters).astype(jnp.float32)
        sizes = metrics.cluster_sizes(labels, n_clusters).astype(jnp.float32)
        n2 = jnp.float32(labels.shape[0]) ** 2
        return {"cross_seed_nmi": jnp.sum(nmi * others) / jnp.maximum(jnp.sum(others), 1.0),
                "self": jnp.sum(sizes ** 2) / n2, "cross": jnp.mean(jnp.sum(table ** 2, axis=(1, 2))) / n2}
    return lax.map(one, (candidates, candidate_seeds))


@functools.partial(jax.jit, static_argnames=("n_clusters",))
def launch_silhouettes(candidates, spaces, n_clusters: int):
    """candidates (C, m), spaces (F, m, e) -> (C,): each partition's
    silhouette averaged over the launch's reference embeddings (every seed's
    first and last epoch). One seed's embedding is trained to fit that seed's
    partition; the mean over all seeds' embeddings favours none of them."""
    def one(labels):
        return jnp.nanmean(jax.vmap(metrics.silhouette, (0, None, None))(spaces, labels, n_clusters))
    return lax.map(one, candidates)


@functools.partial(jax.jit, static_argnames=("n_clusters",))
def size_entropies(candidates, n_clusters: int):
    """candidates (C, N) -> (C,) normalised size entropy of each partition,
    one at a time (`lax.map`): vmapped, the one-hot counts of every candidate
    at once would be C x N x k (4 GB at MNIST x 10 seeds x 151 epochs)."""
    return lax.map(lambda labels: metrics.cluster_size_entropy(labels.astype(jnp.int32), n_clusters,
                                                               normalize=True), candidates)


def _sample(n: int, size: int) -> np.ndarray:
    return run_lib.sample_rows(n, size)


def reference_epochs(epochs: list) -> list:
    return sorted(set(epochs[::REFERENCE_EVERY]) | {epochs[-1]})


def launch_table(parts: Partitions, per_seed: dict | None = None, consensus: dict | None = None,
                 final_silhouette: dict | None = None) -> pd.DataFrame:
    """One row per candidate: every (seed, epoch), then each consensus
    partition of `consensus` {name: (N,) labels}. `per_seed` {seed: epoch}
    marks the per-seed selector's choices ('selected'). Columns:
    cross_seed_nmi, coassoc_divergence, launch_silhouette, size_entropy
    (section 3), and, for the candidate's seed at the final epoch,
    final_silhouette (in its own embedding: `final_silhouette` {seed:
    value}, from the run's label-free score table) and final_size_entropy;
    both NaN for a consensus."""
    e, s, n = parts.labels.shape
    k = parts.n_clusters
    agree, sil = _sample(n, AGREEMENT_POINTS), _sample(n, SILHOUETTE_POINTS)
    consensus = consensus or {}
    flat = parts.labels.reshape(e * s, n)
    rows = pd.DataFrame({"candidate": [f"seed {sd}, epoch {ep}" for ep in parts.epochs for sd in parts.seeds],
                         "seed": np.tile(parts.seeds, e), "epoch": np.repeat(parts.epochs, s), "kind": "epoch"})
    rows = pd.concat([rows, pd.DataFrame({"candidate": list(consensus), "seed": -1, "epoch": -1,
                                          "kind": "consensus"})], ignore_index=True)
    labels = np.concatenate([flat, np.stack(list(consensus.values()))]) if consensus else flat
    refs = np.flatnonzero(np.isin(rows.epoch[:e * s], reference_epochs(parts.epochs)))
    scores = jax.device_get(agreement_scores(jnp.asarray(labels[:, agree], jnp.int32), jnp.asarray(rows.seed),
                                             jnp.asarray(flat[refs][:, agree], jnp.int32),
                                             jnp.asarray(rows.seed.to_numpy()[refs]), k))
    const = float(np.mean(scores["cross"][refs]))   # ||C_R||^2 / n^2: the references' own mean cross term
    rows["cross_seed_nmi"] = np.asarray(scores["cross_seed_nmi"], np.float64)
    rows["coassoc_divergence"] = np.asarray(scores["self"] - 2 * scores["cross"], np.float64) + const
    rows["launch_silhouette"] = np.asarray(launch_silhouettes(
        jnp.asarray(labels[:, sil], jnp.int32), jnp.asarray(parts.spaces[:, sil]), k), np.float64)
    rows["final_silhouette"] = rows.seed.map(final_silhouette or {}).astype(float)
    rows["final"] = rows.epoch == max(parts.epochs)
    rows["size_entropy"] = np.asarray(size_entropies(jnp.asarray(labels), k), np.float64)
    rows["final_size_entropy"] = rows.seed.map(rows[rows.final].set_index("seed").size_entropy).astype(float)
    chosen = per_seed or {}
    rows["selected"] = [chosen.get(sd) == ep for sd, ep in zip(rows.seed, rows.epoch)]
    return rows


# ============================================================ 4. launch selectors (no labels)

def _best(table: pd.DataFrame, column: str, mode: str, among: str | None, why: str) -> dict:
    """The row where `column` is best (ties: the later epoch, then the lower seed)."""
    pool = table[table.kind == "epoch"] if among is None else table[table[among]]
    sign = 1 if mode == "max" else -1
    order = pool.assign(_v=sign * pool[column]).sort_values(["_v", "epoch", "seed"], ascending=[False, False, True])
    row = order.iloc[0]
    others = pool[column].drop(row.name)
    return {"candidate": row.candidate, "seed": int(row.seed), "epoch": int(row.epoch),
            "why": f"{why}: {column} {row[column]:.4f} ({mode} of {len(pool)} candidates"
                   + (f"; the others {others.min():.4f} to {others.max():.4f}" if len(others) else "") + ")"}


def _consensus(name: str, why: str):
    def pick(table):
        row = table[table.candidate == name].iloc[0]
        return {"candidate": name, "seed": -1, "epoch": -1,
                "why": f"{why}: its mean NMI to the seeds' partitions is {row.cross_seed_nmi:.4f}, the selected "
                       f"partitions' own {table[table.selected].cross_seed_nmi.min():.4f} to "
                       f"{table[table.selected].cross_seed_nmi.max():.4f}"}
    return pick


CONSENSUS_SELECTED, CONSENSUS_FINAL = "consensus of the selected epochs", "consensus of the final epochs"

def _best_seed(column: str, what: str, note: str = ""):
    """The seed whose final partition is best by `column`, at its per-seed
    selected epoch. Within a run such a score misleads (a deep-clustering
    embedding is trained to fit its own partition); between seeds at the
    end of the same training it compares like with like."""
    def pick(table):
        pool = table[table.selected]
        row = pool.sort_values([column, "seed"], ascending=[False, True]).iloc[0]
        others = pool[column].drop(row.name)
        tied = "; tied with every other seed, so the lowest seed" if (others == row[column]).all() else ""
        return {"candidate": row.candidate, "seed": int(row.seed), "epoch": int(row.epoch),
                "why": f"the seed whose final partition has {what} ({row[column]:.4f}; the other seeds "
                       f"{others.min():.4f} to {others.max():.4f}{tied}), at its selected epoch {int(row.epoch)}"
                       + note}
    return pick


LAUNCH_SELECTORS = {
    "own_silhouette": _best_seed("final_silhouette", "the highest silhouette in its own embedding"),
    # The seed with the most even cluster sizes: the default for a fixed k
    # (below). It assumes the clusters are of similar size.
    "even_sizes": _best_seed("final_size_entropy", "the most even cluster sizes, by size entropy",
                             "; this assumes clusters of similar size (dataset.cluster_sizes 'even'): where they "
                             "differ it takes the seed that splits a large cluster, so set cluster_sizes='unknown' "
                             "(the launch silhouette) unless you know they are even, and compare the seeds' cluster "
                             "sizes in dcjax report"),
    "agreement": lambda t: _best(t, "cross_seed_nmi", "max", "selected",
                                 "of the seeds' selected epochs, the one most like the other seeds' partitions"),
    "agreement_all": lambda t: _best(t, "cross_seed_nmi", "max", None,
                                     "of all seeds x epochs, the one most like the other seeds' partitions"),
    "discotec": lambda t: _best(t, "coassoc_divergence", "min", "selected",
                                "of the seeds' selected epochs, the one closest to the launch's co-association"),
    "discotec_all": lambda t: _best(t, "coassoc_divergence", "min", None,
                                    "of all seeds x epochs, the one closest to the launch's co-association"),
    "launch_silhouette": lambda t: _best(t, "launch_silhouette", "max", "selected",
                                         "of the seeds' selected epochs, the best silhouette in all seeds' "
                                         "embeddings"),
    "launch_silhouette_all": lambda t: _best(t, "launch_silhouette", "max", None,
                                             "of all seeds x epochs, the best silhouette in all seeds' embeddings"),
    "consensus": _consensus(CONSENSUS_SELECTED, "the consensus (evidence accumulation) of the seeds' selected "
                                                "partitions"),
    "consensus_final": _consensus(CONSENSUS_FINAL, "the consensus (evidence accumulation) of the seeds' final "
                                                   "partitions"),
}
# Candidates of issue 35 (data with uneven clusters): `even_sizes` only where
# the partitions themselves look near-even, else a rule that does not assume
# even clusters. 'Near-even': the median over seeds of the final partition's
# normalised size entropy is >= NEAR_EVEN_ENTROPY. Fixed before any uneven
# launch was scored: classes falling geometrically to a 5x smaller one (10
# classes) have entropy 0.947, 10x 0.899, 20x 0.844; the committed balanced
# fixed-k launches' medians are 0.93-1.00 but for DKM on USPS (0.78).
NEAR_EVEN_ENTROPY = 0.95


def _gated(otherwise: str):
    def pick(table):
        median = float(table[table.selected].final_size_entropy.median())
        if median >= NEAR_EVEN_ENTROPY:
            choice = LAUNCH_SELECTORS["even_sizes"](table)
            gate = f"the seeds' final partitions look near-even (median size entropy {median:.3f} >= " \
                   f"{NEAR_EVEN_ENTROPY}), so "
        else:
            choice = LAUNCH_SELECTORS[otherwise](table)
            gate = f"the seeds' final partitions are uneven (median size entropy {median:.3f} < " \
                   f"{NEAR_EVEN_ENTROPY}), so "
        return choice | {"why": gate + choice["why"]}
    return pick


LAUNCH_SELECTORS["even_or_consensus"] = _gated("consensus")
LAUNCH_SELECTORS["even_or_discotec"] = _gated("discotec")

# The default for a fixed k, and how it was chosen (selection.md, "Launch-level
# selection" and its notes). 'agreement' (the supra-consensus) was declared
# first, before any launch was scored; on the first 5 launches (digits seeds
# 10-14) it lost 1.21 ACC points to a random seed's final epoch. 'own_silhouette'
# then gained only +0.11 on the next 5. The consensus of the selected epochs
# was the default next (+0.96 over 15 digits launches, -1.41 on 5 Optdigits
# ones). A model of the seeds' final scores, fitted leave-one-dataset-out,
# leaned on one feature, the size entropy (experiments/launch_assessor.py);
# 'even_sizes' was pre-registered (commit de2c0c5) to replace the consensus if,
# on the 10 USPS and Pendigits launches then not yet scored, it gained >= +1.0
# over a random seed and more than the consensus. It gained +4.91 (the
# consensus +4.63; regret 2.42, below the median seed in 1 of 10), so it is
# the default since. On Optdigits seeds 5-9, scored after, +4.65 (the
# consensus +4.98): out of sample the two are equally good. It assumes
# clusters of similar size, and says so. Issue 35 (selection.md, "Uneven
# clusters and tables"; pre-registered in commit 0cb0afb) tested it on uneven
# subsamples and tables: it gained -0.03 over a random seed on 16 held-out
# launches (the consensus +0.97); the pre-registered challenger ('agreement')
# gained +0.44, short of the +1.0 the rule asked, so it stays, but no rule met
# that study's targets. Round 2 (pre-registered in commit c001602) offered the
# consensus as the default for data of unknown cluster sizes: on 35 fresh
# uneven launches it lost 0.69 to `even_sizes` and 1.40 to a random seed, so
# `even_sizes` stayed for all data (selection.md, "Uneven clusters and
# tables, round 2"). Round 3 kept the prior and tested the launch silhouette
# for unknown sizes (below): `even_sizes` is the default where the clusters
# are declared even (the named data sets).
DEFAULT_LAUNCH_SELECTOR = "even_sizes"
# Launches whose seeds keep different numbers of clusters (UNSEEN). On the
# first three UNSEEN launches (Optdigits seeds 0-4, DCN/DEC/DKM) the
# median-k consensus lost 2.6, gained 0.2 and lost 1.3 points to a random
# seed's final epoch, while 'own_silhouette' gained 3.1, 1.9 and 7.5 (it chose
# the launch oracle's seed in all three). Made the default for them in
# commit "launch: own_silhouette for UNSEEN launches (pre-registered)", before
# any UNSEEN launch on Pendigits or USPS was scored: those are its test. It
# gained +5.7, +2.7, +0.1 (Pendigits) and +3.3, +0.6, -9.8 (USPS), mean
# +0.42; the consensus +0.76 there, but below the median seed in 4 of 6.
# Neither rule is shown better; this one stays, as registered.
DEFAULT_UNKNOWN_K_SELECTOR = "own_silhouette"
# A fixed k on data whose cluster sizes are not known to be even (a user's
# file or array, unless dataset.cluster_sizes says 'even'). Round 3 of issue
# 35 (pre-registered in commit 84ad810; selection.md, "Uneven clusters and
# tables, round 3") chose it on the 95 launches scored before (the only rule
# above a random seed, interval included, on 56 uneven ones: +0.89) and
# tested it on 38 fresh ones (uneven MNIST, Optdigits and Fashion-MNIST
# subsamples, iris): +2.17 ACC points over `even_sizes` [0.28, 4.06], +1.22
# over a random seed's final partition [0.33, 2.14]. It is short of the
# issue's targets there (regret 4.78, below the median seed in 29%), and on
# the balanced launches it lost 2.94 to `even_sizes`: hence the prior.
DEFAULT_UNEVEN_SELECTOR = "launch_silhouette"
UNKNOWN_SIZES_NOTE = ("; chosen so because dataset.cluster_sizes is 'unknown' (a file or an array): the rule that "
                      "assumes even clusters picks the seed that splits a large cluster; set cluster_sizes='even' if "
                      "your clusters are of near-equal size")


def cluster_sizes_of(config: dict | None) -> str:
    """'even' or 'unknown': a run's dataset.cluster_sizes (its config.json as
    a dict), 'auto' resolved by the data: the named data sets have near-even
    classes (the benchmarks; 'blobs' by construction), a file, an array or a
    tfds set may not."""
    dataset = (config or {}).get("dataset") or {}
    declared = dataset.get("cluster_sizes", "auto")
    if declared != "auto":
        return declared
    return "even" if dataset.get("name") in config_lib.NAMED_DATASETS else "unknown"


def default_selector(parts: Partitions, cluster_sizes: str = "even") -> str:
    """The launch selector `select_launch` uses unless told: for a fixed k,
    the seed with the most even cluster sizes where the clusters are known
    to be of similar size, else the best silhouette in every seed's
    embedding; the best own-space silhouette where k differs by seed."""
    if not parts.fixed_k:
        return DEFAULT_UNKNOWN_K_SELECTOR
    return DEFAULT_LAUNCH_SELECTOR if cluster_sizes == "even" else DEFAULT_UNEVEN_SELECTOR


# ============================================================ 5. the command line's work

def candidate_labels(parts: Partitions, choice: dict, consensus: dict) -> np.ndarray:
    """(N,) labels of a choice: a (seed, epoch) partition or a consensus."""
    if choice["seed"] == -1:
        return consensus[choice["candidate"]]
    return parts.labels[parts.epochs.index(choice["epoch"]), parts.seeds.index(choice["seed"])]


def consensus_candidates(parts: Partitions, per_seed: dict) -> dict:
    """The consensus partitions a launch offers: of the seeds' selected
    epochs and of their final epochs. With UNSEEN's k unknown, a consensus
    has the median number of clusters of the partitions it combines."""
    def of(epochs):
        members = np.stack([parts.labels[parts.epochs.index(epochs[sd]), i] for i, sd in enumerate(parts.seeds)])
        k = parts.n_clusters if parts.fixed_k else int(np.median([len(np.unique(m)) for m in members]))
        return consensus_partition(members, k)
    return {CONSENSUS_SELECTED: of(per_seed), CONSENSUS_FINAL: of({sd: parts.epochs[-1] for sd in parts.seeds})}


def final_silhouettes(workdir, parts: Partitions) -> dict:
    """{seed: silhouette of its final-epoch partition in its own embedding},
    from the run's label-free score table (scores.csv: `dcjax.evaluate`,
    which `selection.select_run` has just brought up to date)."""
    scores = selection.scores_table(workdir, labels=False)
    final = scores[(scores.phase == parts.phase) & (scores.epoch == max(parts.epochs))]
    return dict(zip(final.seed.astype(int), final.silhouette.astype(float)))


def select_launch(workdir, per_seed: dict, selector: str | None = None) -> dict:
    """The launch's choice among every (seed, epoch) and the consensus
    partitions, given the per-seed result of `selection.select_run`
    (`per_seed`), by `selector` (default: `default_selector`). Adds it to
    <workdir>/selection.json ('launch') and writes its labels, one integer
    per data row, to <workdir>/selected_labels.npy. With one seed the choice
    is that seed's selected epoch."""
    workdir = Path(workdir)
    parts = read_partitions(workdir, per_seed["phase"])
    sizes = cluster_sizes_of(workdir_lib.read_config(workdir))
    default = selector is None
    selector = selector or default_selector(parts, sizes)
    chosen = {s["seed"]: s["epoch"] for s in per_seed["seeds"]}
    if len(parts.seeds) == 1:
        seed, epoch = parts.seeds[0], chosen[parts.seeds[0]]
        choice = {"candidate": f"seed {seed}, epoch {epoch}", "seed": seed, "epoch": epoch,
                  "why": "one seed: its selected epoch"}
        consensus, table = {}, None
    else:
        consensus = consensus_candidates(parts, chosen)
        table = launch_table(parts, chosen, consensus, final_silhouettes(workdir, parts))
        choice = LAUNCH_SELECTORS[selector](table)
        if default and selector == DEFAULT_UNEVEN_SELECTOR:
            choice["why"] += UNKNOWN_SIZES_NOTE
    labels = candidate_labels(parts, choice, consensus).astype(np.int32)
    checkpointing.save_npy_atomic(workdir / "selected_labels.npy", labels)
    result = {"selector": selector if table is not None else None, **choice, "cluster_sizes": sizes,
              "phase": parts.phase,
              "n_candidates": 0 if table is None else len(table), "labels": str(workdir / "selected_labels.npy")}
    if table is not None:
        row = table[table.candidate == choice["candidate"]].iloc[0]
        result["scores"] = {c: None if np.isnan(row[c]) else round(float(row[c]), 5)
                            for c in ("cross_seed_nmi", "coassoc_divergence", "launch_silhouette", "final_silhouette",
                                      "size_entropy", "final_size_entropy")}
    path = workdir / "selection.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    checkpointing.write_text_atomic(path, json.dumps(saved | {"launch": result}, indent=2) + "\n")
    return result
