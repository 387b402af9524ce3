"""Data sets for deep clustering: load, normalise, validate and batch.

Read top to bottom:

1. `Dataset` and `load_dataset(cfg)`: the one entry point the trainer uses.
2. The sources: `digits` and `blobs` (made by scikit-learn, work anywhere),
   the real benchmark sets stored as `<data_dir>/<name>.npz` (fetched from
   their public source on first use when missing), and `tfds:<name>`.
3. Your own data: a path as the name (`load_file`), see below.
4. `normalize`, `validate`: preprocessing and the checks that fail fast with
   a clear message instead of a NaN loss an hour later.
5. `batch_indices`, `last_batch_indices`, `eval_batches`: index arrays for training and evaluation
   passes (the data itself stays on the host or device as one array).

Every benchmark `.npz` holds `x` (N, d) and `y` (N,), the training set
followed by the test set, values exactly as in the source (see
`shared/data/README.md`).

Files: `dataset.name` may be a path ending in .csv, .tsv (either also
gzipped, .csv.gz), .npy or .npz.
- CSV/TSV: one row per sample; every column is a feature, except the one
  `dataset.label_column` names (by header name, or 1-based number in a file
  without header), whose values (any text) are labels. The first line is a
  header when any of its fields is not a number, or when it is pandas'
  default names 0, 1, 2, ... (then an unnamed first column 0 .. N-1 is a
  saved DataFrame index, and is left out with a warning). UTF-8 with or
  without a byte-order mark; another encoding is read as Latin-1, with a
  warning. A .csv whose first line has more ';' than ',' is Excel's export
  for decimal-comma locales: ';'-separated, with decimal commas. Read by
  pandas; a file pandas refuses, or whose values are not all finite and
  within float32, is read again line by line to name the line and column.
- .npy: one array, memory-mapped. .npz: `x`, and labels `y` if present.
  (N, d) arrays are tabular; (N, H, W) and (N, H, W, C) (channels last) images.
- Labels serve evaluation only. Without them the number of clusters is
  unknown (`Dataset.n_clusters` 0): a method that needs k asks for
  `dataset.n_clusters` (`methods.n_centers`); UNSEEN finds it.
- Refused before any compute, naming the file and the line/row and column: an
  empty file, a single row, a ragged row, duplicate column names, a
  non-numeric or empty value, NaN or inf, a value beyond float32 (1e300),
  rows that are all identical (`DataError`).
- Normalisation (`dataset.normalize='auto'`): tabular data is z-scored per
  feature (columns have unrelated units), images per channel (one mean and
  sd per colour channel, over all pixels: the pixels keep their relative
  scale); 'feature', 'channel' or 'none' choose explicitly.
"""
from __future__ import annotations

import gzip
import io
import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Data that cannot be clustered as given: the message names the file or
    data set, and the row and column where there is one."""


class Dataset(NamedTuple):
    x: np.ndarray          # (N, d) float32, already preprocessed
    y: np.ndarray | None   # (N,) int64 labels, or None when unlabelled
    n_clusters: int        # the configured k, else the label classes; 0: unknown (no labels)
    name: str
    kind: str              # 'image' or 'tabular': decides the default normalisation


# Optional config fields and their defaults (`name` is required).
DEFAULTS = dict(
    data_dir="", normalize="auto", n_clusters=0, subsample=0, subsample_seed=0, label_column="", tag_columns="",
    n_samples=1000, n_features=10, blob_clusters=5, cluster_std=1.0, blob_seed=0)
# blob_seed also seeds 'uniform' and the column permutations of 'shuffled:<name>'.

DATA_DIR_ENV = "DCJAX_DATA_DIR"
# <repo>/../shared/data: where CI and the developers' checkouts keep the data.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# --------------------------------------------------------------------------
# 1. Entry point
# --------------------------------------------------------------------------

def load_dataset(cfg) -> Dataset:
    """Load, check, subsample and normalise the data set `cfg` names.

    `cfg` is an `ml_collections.ConfigDict` or a plain dict with the fields of
    `DEFAULTS` plus `name`. The order (subsample, then normalise) makes the
    statistics those of the rows actually trained on.
    """
    if "name" not in cfg or not cfg["name"]:
        raise ValueError("dataset config needs a `name`, e.g. 'digits'")
    opt = {k: cfg.get(k, v) for k, v in DEFAULTS.items()}
    name = str(cfg["name"])

    x, y, kind = _load_raw(name, opt)
    channels = x.shape[-1] if kind == "image" and x.ndim == 4 else 1   # (N, H, W, C): channels last
    x = x.reshape(len(x), -1)
    _check_finite(x, name)
    y = None if y is None else np.asarray(y, np.int64).reshape(-1)
    if y is not None and len(y) != len(x):
        raise DataError(f"data set {name!r}: {len(x)} rows in x but {len(y)} labels in y")

    n_clusters = int(opt["n_clusters"])
    if n_clusters <= 0 and y is not None:
        n_clusters = len(np.unique(y))   # of the whole set, before subsampling

    if int(opt["subsample"]) > 0:
        rows = subsample_rows(y, len(x), int(opt["subsample"]), int(opt["subsample_seed"]))
        x, y = x[rows], None if y is None else y[rows]

    return Dataset(normalize(x, normalize_mode(opt["normalize"], kind), channels), y, n_clusters, name, kind)


def data_dir(configured: str = "") -> Path:
    """The data folder: the config's, else $DCJAX_DATA_DIR, else <repo>/../shared/data."""
    chosen = configured or os.environ.get(DATA_DIR_ENV, "") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def subsample_rows(y: np.ndarray | None, n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a fixed subset of `size` rows, stratified by `y` when it can be.

    Stratification keeps every cluster present in quick tests; it falls back to a
    plain random draw when there are no labels or too few rows per class.
    """
    if size >= n:
        return np.arange(n)
    if y is not None:
        from sklearn.model_selection import train_test_split
        try:
            rows, _ = train_test_split(np.arange(n), train_size=size, stratify=y,
                                       random_state=seed)
            return np.sort(rows)
        except ValueError:   # a class with one member, or fewer rows than classes
            pass
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


# --------------------------------------------------------------------------
# 2. Sources
# --------------------------------------------------------------------------

def _load_raw(name: str, opt: dict) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(x, y, kind) as the source has them, before any preprocessing."""
    key = name.strip().lower()
    if key == "digits":
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)   # 8x8 images, values 0..16
        return x, y, "image"
    if key == "blobs":
        from sklearn.datasets import make_blobs
        x, y = make_blobs(n_samples=int(opt["n_samples"]), n_features=int(opt["n_features"]),
                          centers=int(opt["blob_clusters"]), cluster_std=float(opt["cluster_std"]),
                          random_state=int(opt["blob_seed"]))
        return x, y, "tabular"
    if key == "uniform":   # a control with no cluster structure at all
        rng = np.random.default_rng(int(opt["blob_seed"]))
        return rng.random((int(opt["n_samples"]), int(opt["n_features"])), np.float32), None, "tabular"
    if key.startswith("shuffled:"):
        # A control with the same marginals as <name> but no structure between
        # features: every column permuted on its own. The labels stay with
        # their rows, so label-based scores show how little is left (~chance).
        x, y, kind = _load_raw(name.strip()[len("shuffled:"):], opt)
        x = np.array(x).reshape(len(x), -1)
        rng = np.random.default_rng(int(opt["blob_seed"]))
        return np.stack([rng.permutation(column) for column in x.T], axis=1), y, kind
    if key in SOURCES:
        x, y = load_npz(key, data_dir(opt["data_dir"]))
        return x, y, SOURCES[key].kind
    if key.startswith("tfds:"):
        return load_tfds(name.strip()[len("tfds:"):], opt["data_dir"])
    if is_file_name(name):
        return load_file(name, opt["label_column"], opt["tag_columns"])
    known = ", ".join(["blobs", "digits", "uniform", *sorted(SOURCES), "tfds:<name>", "shuffled:<name>"])
    raise DataError(f"unknown data set {name!r}; known: {known}, or a file ({', '.join(FILE_SUFFIXES)})")


# Parsers: bytes of the (already gunzipped) source files -> (x, y).

def parse_usps(text: bytes) -> tuple[np.ndarray, np.ndarray]:
    """ESL `zip.train`/`zip.test`: per line the digit, then 256 grey values in [-1, 1]."""
    a = np.loadtxt(io.BytesIO(text), dtype=np.float32, ndmin=2)
    return a[:, 1:], a[:, 0].astype(np.int64)


def parse_uci_csv(text: bytes) -> tuple[np.ndarray, np.ndarray]:
    """UCI optdigits/pendigits: comma-separated integer features, the class last."""
    a = np.loadtxt(io.BytesIO(text), dtype=np.float32, delimiter=",", ndmin=2)
    return a[:, :-1], a[:, -1].astype(np.int64)


def parse_idx(data: bytes) -> np.ndarray:
    """An unsigned-byte IDX array (the MNIST format): zero, zero, type 0x08, ndim, sizes."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def parse_idx_pair(images: bytes, labels: bytes) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style images + labels files -> (N, H*W) uint8, (N,) int64."""
    x, y = parse_idx(images), parse_idx(labels)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    return x.reshape(len(x), -1), y.astype(np.int64)


class Source(NamedTuple):
    kind: str
    origin: str                        # for humans: where the data comes from
    locations: tuple[str, ...]         # folders or base URLs, tried in order
    files: tuple[tuple[str, ...], ...]  # per split (train, test): the files `parse` takes
    parse: Callable[..., tuple[np.ndarray, np.ndarray]]


_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/"
_IDX_FILES = (("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))

SOURCES = {
    "usps": Source(
        "image", "USPS digits, zip.train.gz/zip.test.gz of Hastie et al., The Elements of "
        "Statistical Learning", ("https://hastie.su.domains/ElemStatLearn/datasets/",),
        (("zip.train.gz",), ("zip.test.gz",)), parse_usps),
    "optdigits": Source(
        "image", "UCI Optical Recognition of Handwritten Digits, optdigits.tra/.tes",
        (_UCI + "optdigits/",), (("optdigits.tra",), ("optdigits.tes",)), parse_uci_csv),
    "pendigits": Source(
        "tabular", "UCI Pen-Based Recognition of Handwritten Digits, pendigits.tra/.tes",
        (_UCI + "pendigits/",), (("pendigits.tra",), ("pendigits.tes",)), parse_uci_csv),
    "mnist": Source(
        "image", "MNIST IDX files (LeCun et al.)",
        ("https://yann.lecun.com/exdb/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        _IDX_FILES, parse_idx_pair),
    "fmnist": Source(
        "image", "Fashion-MNIST IDX files (Zalando Research; Debian package dataset-fashion-mnist)",
        ("/usr/share/datasets/fashion-mnist/", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        _IDX_FILES, parse_idx_pair),
}


def load_npz(name: str, folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read `<folder>/<name>.npz`, or build it from the public source if missing."""
    path = folder / f"{name}.npz"
    if not path.exists():
        return fetch_to_npz(name, path)
    with np.load(path, allow_pickle=False) as f:
        return f["x"], (f["y"] if "y" in f else None)


def fetch_bytes(location: str) -> bytes:
    """Read a local file or a URL. The only function that touches the network (tests replace it)."""
    if location.startswith(("http://", "https://")):
        with urllib.request.urlopen(location, timeout=60) as r:
            return r.read()
    return Path(location).read_bytes()


def _gunzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def fetch_to_npz(name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x, y), train then test, from the first location of the source that works, cached at `path`.

    A folder we cannot write to (e.g. a read-only shared one) only costs the cache.
    """
    src, errors = SOURCES[name], []
    for loc in src.locations:
        try:
            parts = [src.parse(*(_gunzip(fetch_bytes(loc + f)) for f in files)) for files in src.files]
            break
        except (OSError, ValueError) as e:   # URLError and HTTPError are OSErrors
            errors.append(f"{loc}: {type(e).__name__}: {e}")
    else:
        raise FileNotFoundError(_missing_message(name, path, src, "fetching it failed:\n  "
                                                 + "\n  ".join(errors)))
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    part = None
    try:   # write then rename, so an interrupted run leaves no half-written .npz
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as f:
            part = Path(f.name)
            np.savez_compressed(f, x=x, y=y)
        os.replace(part, path)
    except OSError as e:
        if part is not None:
            part.unlink(missing_ok=True)
        log.warning("could not save %s (%s); using the data from %s without caching", path, e, loc)
    else:
        log.info("wrote %s (%d rows) from %s", path, len(x), loc)
    return x, y


def _missing_message(name: str, path: Path, src: Source, why: str) -> str:
    return (f"data set {name!r} not found: looked for {path}. Put {path.name} (arrays x (N, d) "
            f"and y (N,)) in {path.parent}, or point the dataset's data_dir or the "
            f"{DATA_DIR_ENV} environment variable at the folder that holds it. The data comes "
            f"from {src.origin} ({', '.join(src.locations)}); {why}")


def load_tfds(spec: str, folder: str = "") -> tuple[np.ndarray, np.ndarray, str]:
    """`<name>[:<split>]` from tensorflow-datasets (default split 'all'), images flattened.

    Uses `tfds.data_source` (random access, NumPy only), which reads data prepared
    in the ArrayRecord format without TensorFlow; preparing (downloading) a data
    set needs TensorFlow. `folder` empty -> TFDS's own data dir.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f"'tfds:{spec}' needs tensorflow-datasets: pip install 'dcjax[tfds]'") from e
    name, _, split = spec.partition(":")
    source = tfds.data_source(name, split=split or "all", data_dir=folder or None)
    rows = [source[i] for i in range(len(source))]
    if not rows or "image" not in rows[0] or "label" not in rows[0]:
        raise ValueError(f"tfds:{spec}: need a non-empty split with 'image' and 'label' features")
    x = np.stack([np.asarray(r["image"]).reshape(-1) for r in rows])
    return x, np.array([r["label"] for r in rows], np.int64), "image"


# --------------------------------------------------------------------------
# 3. Your own data: files
# --------------------------------------------------------------------------

TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
FILE_SUFFIXES = (*TABLE_SUFFIXES, ".npy", ".npz")
FLOAT32_MAX = float(np.finfo(np.float32).max)   # dcjax computes in float32: larger values become inf


def file_suffix(name) -> str:
    """The file kind of a name ('.csv.gz', '.npy', ...), or '' for a data set name."""
    lower = str(name).lower()
    return next((s for s in sorted(FILE_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), "")


def is_file_name(name: str) -> bool:
    return bool(file_suffix(name))


def load_file(path, label_column: str = "", tag_columns: str = "") -> tuple[np.ndarray, np.ndarray | None, str]:
    """(x, y or None, kind) of a .csv/.tsv(.gz)/.npy/.npz file, checked (module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = file_suffix(path)
    if suffix in TABLE_SUFFIXES:
        x, y = load_table(path, "\t" if suffix.startswith(".tsv") else None, str(label_column), str(tag_columns))
        return x, y, "tabular"
    if label_column:
        raise DataError(f"{path}: dataset.label_column is for CSV/TSV files; a .npz holds labels as 'y'")
    try:
        if suffix == ".npy":
            x, y = np.load(path, mmap_mode="r", allow_pickle=False), None
        else:
            with np.load(path, allow_pickle=False) as f:
                if "x" not in f.files:
                    raise DataError(f"{path}: no array 'x' (it has {', '.join(f.files) or 'none'}); "
                                    "save the data as x= and optional labels as y=")
                x, y = f["x"], (f["y"] if "y" in f.files else None)
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable NumPy file without pickled objects ({e})") from None
    _check_array(path, x, y)
    return x, y, "image" if x.ndim >= 3 else "tabular"


def _check_array(path: Path, x: np.ndarray, y: np.ndarray | None) -> None:
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
            or x.dtype == np.bool_):
        raise DataError(f"{path}: the data are {x.dtype}, not numbers")
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(f"{path}: an array of shape {x.shape}; expected (N, d) rows of features, "
                        "or (N, H, W) / (N, H, W, C) images")
    if len(x) == 0 or x[0].size == 0:
        raise DataError(f"{path}: the array is empty (shape {x.shape})")
    if len(x) == 1:
        raise DataError(f"{path}: a single row; clustering needs at least 2")
    if y is not None and np.shape(y) != (len(x),):
        raise DataError(f"{path}: y has shape {np.shape(y)}, expected ({len(x)},): one label per row of x")
    flat = x.reshape(len(x), -1)
    bad = first_non_finite(flat)
    if bad is not None:
        row, col = bad
        raise DataError(f"{path}: row {row}, column {col} (0-based, flattened) is "
                        f"{flat[row, col]}; remove or impute NaN/inf values first")
    bad = first_beyond_float32(flat)
    if bad is not None:
        row, col = bad
        raise DataError(f"{path}: row {row}, column {col} (0-based, flattened) is {flat[row, col]:g}, "
                        f"{_BEYOND_FLOAT32}")


_BEYOND_FLOAT32 = (f"beyond float32's range (±{FLOAT32_MAX:.1e}), in which dcjax computes; rescale the column "
                   "(divide it, or take its log)")


class _Layout(NamedTuple):
    """How a text table is written: what `load_table` found in its first lines."""
    encoding: str
    sep: str
    decimal: str
    header: bool
    first_line: int      # 1-based line of the first non-blank row (the header, if any)
    names: list[str]     # column names (the header's, else 'column 1', ...)


def load_table(path: Path, delimiter: str | None = None,
               label_column: str = "", tag_columns: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """(x float64, y int64 or None) of a CSV/TSV file, plain or gzipped.

    `delimiter` None: ',' or, as Excel writes in locales with a decimal comma,
    ';' (then with decimal commas). UTF-8 with or without a byte-order mark;
    another encoding is read as Latin-1, with a warning. pandas reads a good
    file; a file it refuses, or whose values are not all finite float32
    numbers, is read again line by line to say where the problem is: errors
    name the file, the line (1-based, as an editor shows it) and the column."""
    try:
        return _load_table(path, delimiter, label_column, "utf-8-sig", tag_columns)
    except UnicodeDecodeError as e:
        log.warning("%s is not UTF-8 (byte 0x%02x); reading it as Latin-1: save it as UTF-8 if its text "
                    "(column names, labels) comes out wrong", path, e.object[e.start])
        return _load_table(path, delimiter, label_column, "latin-1", tag_columns)


def _open_text(path: Path, encoding: str):
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    return opener(path, "rt", encoding=encoding, newline="")


def _load_table(path: Path, delimiter: str | None, label_column: str, encoding: str, tag_columns: str = ""):
    layout = _layout(path, delimiter, encoding)
    names = layout.names
    seen = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"{path}: duplicate column name {name!r} (columns {seen[name] + 1} and {i + 1}); "
                            "rename one")
        seen[name] = i
    label = _label_index(path, names, label_column, layout.header)
    tagged = {c.strip() for c in tag_columns.split(",") if c.strip()}   # tags (dcjax/explain.py), not features
    features = [j for j in range(len(names)) if j != label and names[j] not in tagged]
    if not features:
        raise DataError(f"{path}: no feature columns besides the label column")
    x, labels = _read_fast(path, layout, features, label)
    if x is None:   # pandas refused it, or found what it cannot place: say where
        x, labels = _read_slow(path, layout, features, label)
    x = _drop_saved_index(path, layout, x, features)
    if label is None:
        return x, None
    _, y = np.unique(labels, return_inverse=True)
    return x, y.astype(np.int64)


def _layout(path: Path, delimiter: str | None, encoding: str) -> _Layout:
    """Separator, decimal mark and header from the file's first lines."""
    import csv
    import re

    sample, first_line = [], None
    with _open_text(path, encoding) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                first_line = first_line or number
                sample.append(line)
                if len(sample) == 20:
                    break
    if first_line is None:
        raise DataError(f"{path}: the file is empty")
    sep, decimal = delimiter or ",", "."
    if delimiter is None and sample[0].count(";") > sample[0].count(","):
        sep = ";"   # Excel's CSV where the decimal mark is a comma
        decimal = "," if any(re.search(r"\d,\d", line) for line in sample) else "."
    first = next(csv.reader([sample[0]], delimiter=sep))
    header = any(field.strip() and not _is_number(field, decimal) for field in first)
    defaults = [[str(i) for i in range(len(first))], ["", *(str(i) for i in range(len(first) - 1))]]
    if not header and [field.strip() for field in first] in defaults:
        header = True   # pandas' default column names (a DataFrame saved from an array), not data
        log.info("%s line %d is 0, 1, 2, ...: read as pandas' column names, not as data", path, first_line)
    names = [field.strip() for field in first] if header else [f"column {i + 1}" for i in range(len(first))]
    return _Layout(encoding, sep, decimal, header, first_line, names)


def _read_fast(path: Path, layout: _Layout, features: list[int], label: int | None):
    """(x, labels) by pandas, or (None, None) when the file needs `_read_slow`'s diagnosis."""
    import pandas as pd

    try:
        frame = pd.read_csv(
            path, sep=layout.sep, decimal=layout.decimal, header=None, names=range(len(layout.names)),
            skiprows=layout.first_line if layout.header else layout.first_line - 1, encoding=layout.encoding,
            compression="infer", dtype={j: (str if j == label else np.float64) for j in range(len(layout.names))},
            keep_default_na=False, na_values={j: ["nan", "NaN", "NA", ""] for j in features},
            skip_blank_lines=True, engine="c", quotechar='"')
    except (ValueError, pd.errors.ParserError, IndexError):
        return None, None
    if len(frame) < 2:
        return None, None
    x = frame[features].to_numpy(np.float64)
    if not np.isfinite(x).all() or (np.abs(x) > FLOAT32_MAX).any():
        return None, None
    if label is None:
        return x, None
    labels = frame[label].fillna("").str.strip().to_numpy(str)
    if (labels == "").any():
        return None, None
    return x, labels


def _read_slow(path: Path, layout: _Layout, features: list[int], label: int | None):
    """(x, labels) read line by line, raising a DataError naming the line and
    column of the first problem."""
    import csv

    with _open_text(path, layout.encoding) as f:
        reader = csv.reader(f, delimiter=layout.sep)
        rows = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
    names, header = layout.names, layout.header
    data = rows[1:] if header else rows
    if not data:
        raise DataError(f"{path}: a header but no data rows")
    if len(data) == 1:
        raise DataError(f"{path}: a single data row (line {data[0][0]}); clustering needs at least 2")
    for line, row in data:
        if len(row) != len(names):
            raise DataError(f"{path} line {line}: {len(row)} field{'s' * (len(row) != 1)}, but {len(names)} in "
                            f"{'the header' if header else f'line {layout.first_line}'} (a ragged row)")
    x = np.empty((len(data), len(features)))
    for i, (line, row) in enumerate(data):
        for c, j in enumerate(features):
            if not _is_number(row[j], layout.decimal):
                what = "an empty value" if not row[j].strip() else f"{row[j]!r}, not a number"
                raise DataError(f"{path} line {line}, column {names[j]!r}: {what}; every column but "
                                "dataset.label_column must be numeric (drop the column, or impute the value)")
            x[i, c] = _number(row[j], layout.decimal)
    bad = first_non_finite(x)
    if bad is not None:
        row, col = bad
        raise DataError(f"{path} line {data[row][0]}, column {names[features[col]]!r}: {x[row, col]}; "
                        "remove or impute NaN/inf values first")
    bad = first_beyond_float32(x)
    if bad is not None:
        row, col = bad
        raise DataError(f"{path} line {data[row][0]}, column {names[features[col]]!r}: {x[row, col]:g} is "
                        f"{_BEYOND_FLOAT32}")
    if label is None:
        return x, None
    labels = np.array([row[label].strip() for _, row in data])
    empty = next((line for (line, _), v in zip(data, labels) if not v), None)
    if empty is not None:
        raise DataError(f"{path} line {empty}, column {names[label]!r}: an empty label")
    return x, labels


def _drop_saved_index(path: Path, layout: _Layout, x: np.ndarray, features: list[int]) -> np.ndarray:
    """Drop a first column that is a saved pandas index (unnamed, 0 .. N-1):
    kept, it would be a feature that orders the rows, not describes them."""
    if (layout.header and features[0] == 0 and layout.names[0] in ("", "Unnamed: 0")
            and np.array_equal(x[:, 0], np.arange(len(x)))):
        log.warning("%s: the unnamed first column is 0, 1, ..., %d, a saved DataFrame index; it is left out "
                    "(to_csv(index=False) saves without it)", path, len(x) - 1)
        return x[:, 1:]
    return x


def _number(text: str, decimal: str = ".") -> float:
    return float(text.replace(",", ".") if decimal == "," else text)


def _is_number(text: str, decimal: str = ".") -> bool:
    try:
        _number(text, decimal)
        return True
    except ValueError:
        return False


def _label_index(path: Path, names: list[str], label_column: str, header: bool) -> int | None:
    if not label_column:
        return None
    if label_column in names:
        return names.index(label_column)
    if not header and label_column.isdigit() and 1 <= int(label_column) <= len(names):
        return int(label_column) - 1
    raise DataError(f"{path}: no column {label_column!r} for dataset.label_column; the columns are "
                    + ", ".join(map(repr, names)))


def first_beyond_float32(x: np.ndarray, rows_per_chunk: int = 65536) -> tuple[int, int] | None:
    """(row, column) of the first finite value that float32 cannot hold, or None."""
    if not np.issubdtype(x.dtype, np.floating) or np.finfo(x.dtype).max <= FLOAT32_MAX:
        return None
    for start in range(0, len(x), rows_per_chunk):
        bad = np.abs(x[start:start + rows_per_chunk]) > FLOAT32_MAX
        if bad.any():
            row, col = np.argwhere(bad)[0]
            return start + int(row), int(col)
    return None


def first_non_finite(x: np.ndarray, rows_per_chunk: int = 65536) -> tuple[int, int] | None:
    """(row, column) of the first NaN/inf of a 2-D array, or None. In chunks
    of rows, so a memory-mapped file is never copied whole."""
    if not np.issubdtype(x.dtype, np.floating):
        return None
    for start in range(0, len(x), rows_per_chunk):
        bad = ~np.isfinite(x[start:start + rows_per_chunk])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            return start + int(row), int(col)
    return None


# --------------------------------------------------------------------------
# 4. Preprocessing and checks
# --------------------------------------------------------------------------

_MODES = {"image": "channel", "tabular": "feature", "channel": "channel",
          "feature": "feature", "none": "none"}


def normalize_mode(setting: str, kind: str) -> str:
    """The normalisation that runs: the data kind's rule under 'auto'."""
    return kind if setting == "auto" else setting


class Normalization(NamedTuple):
    """A fitted z-score: kept by the estimators to embed new data as the training data were."""
    mean: np.ndarray
    std: np.ndarray
    constant: np.ndarray   # features (or channels) with one value: they map to 0, not NaN
    channels: int          # > 1: x is (N, H*W*C), channels last, with per-channel statistics

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.channels > 1:
            return self._apply(x.reshape(len(x), -1, self.channels)).reshape(len(x), -1)
        return self._apply(x)

    def _apply(self, x):
        return np.where(self.constant, np.float32(0), (x - self.mean) / np.where(self.constant, 1, self.std))


def fit_normalization(x: np.ndarray, kind_or_mode: str, channels: int = 1) -> Normalization | None:
    """The z-score statistics of `x` (N, d), or None for 'none'.

    'channel' (default for 'image'): one mean and std per channel over all
    pixels (the grayscale sets have one channel), which keeps the pixels'
    relative scale. 'feature' (default for 'tabular'): per column, since
    columns have unrelated units; constant columns become 0 rather than NaN.
    """
    if kind_or_mode not in _MODES:
        raise DataError(f"unknown normalisation {kind_or_mode!r}; known: auto, {', '.join(_MODES)}")
    mode = _MODES[kind_or_mode]
    x = np.asarray(x, np.float32)
    if mode == "none" or x.size == 0:
        return None
    if mode == "channel" and channels > 1:
        x, axis = x.reshape(len(x), -1, channels), (0, 1)
    else:
        axis = None if mode == "channel" else 0
    mean = x.mean(axis=axis, dtype=np.float64).astype(np.float32)
    std = x.std(axis=axis, dtype=np.float64).astype(np.float32)
    constant = np.ptp(x, axis=axis) == 0   # exact, unlike std > 0 after rounding
    return Normalization(mean, std, constant, channels if mode == "channel" else 1)


def normalize(x: np.ndarray, kind_or_mode: str, channels: int = 1) -> np.ndarray:
    """z-score `x` as float32 by the rule of `fit_normalization`; 'none': only cast."""
    fitted = fit_normalization(x, kind_or_mode, channels)
    return np.asarray(x, np.float32) if fitted is None else fitted(x)


def _check_finite(x: np.ndarray, name: str = "x") -> None:
    """NaN/inf, and values float32 cannot hold (they would become inf), refused naming the first."""
    if np.issubdtype(x.dtype, np.integer):
        return
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=-1) if x.ndim > 1 else bad)
        raise DataError(f"{name}: {int(bad.sum())} NaN/inf values in {len(rows)} rows "
                        f"(first row {int(rows[0])}); clean or impute them before clustering")
    beyond = first_beyond_float32(x.reshape(len(x), -1))
    if beyond is not None:
        row, col = beyond
        raise DataError(f"{name}: row {row}, column {col} (0-based) is {x.reshape(len(x), -1)[row, col]:g}, "
                        f"{_BEYOND_FLOAT32}")


def _check_spread(x: np.ndarray, k: int, name: str) -> None:
    """Refuse data whose rows cannot make k clusters: all identical, or fewer
    distinct rows than clusters (counted when the data is small enough to sort)."""
    n = len(x)
    if n > 1 and not (x != x[:1]).any():
        raise DataError(f"{name}: all {n} rows are identical, so there is nothing to cluster; check that the "
                        "file holds the data you meant")
    if x.size <= 20_000_000:
        rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1])))
        distinct = len(np.unique(rows))
        if distinct < k:
            raise DataError(f"{name}: only {distinct} distinct rows for {k} clusters; use fewer clusters")


def validate(x, y, n_clusters: int, batch_size: int, name: str = "x") -> None:
    """Raise ValueError if this data cannot be clustered with these settings.

    Cheap shape checks first, the O(N d) scans last; all before any compute.
    `name` (the data set or file) starts each message.
    """
    x = np.asarray(x)
    if x.ndim != 2 or len(x) == 0:
        raise DataError(f"{name}: the data must be a non-empty (N, d) array, got shape {x.shape}")
    n, k = len(x), int(n_clusters)
    if y is not None and np.shape(y) != (n,):
        raise DataError(f"{name}: labels must have shape ({n},) to match x, got {np.shape(y)}")
    if k < 2:
        raise DataError(f"n_clusters must be at least 2, got {k}")
    if k > n:
        raise DataError(f"n_clusters={k} is more than the {n} samples")
    if n < 2 * k:
        raise DataError(f"{n} samples for {k} clusters is fewer than 2 per cluster on average; "
                        f"use more data or fewer clusters")
    if batch_size < 1 or batch_size > n:
        raise DataError(f"batch_size={batch_size} must be between 1 and the {n} samples: "
                        f"set batch_size to at most {n}")
    _check_finite(x, name)
    _check_spread(x, k, name)


# --------------------------------------------------------------------------
# 5. Batching
# --------------------------------------------------------------------------

def batch_indices(rng: jax.Array, n: int, batch_size: int) -> jnp.ndarray:
    """A random permutation of range(n) as (n // batch_size, batch_size) int32.

    The ragged last batch is dropped so every step has the same shape (no
    recompiles). `n` and `batch_size` are static: jit with `static_argnums=(1, 2)`;
    vmap over `rng` to get one epoch order per seed.
    """
    n_batches = n // batch_size
    if n_batches < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} samples")
    perm = jax.random.permutation(rng, n)
    return perm[: n_batches * batch_size].reshape(n_batches, batch_size).astype(jnp.int32)


def last_batch_indices(rng: jax.Array, n: int, batch_size: int) -> jnp.ndarray:
    """The ragged last batch that `batch_indices` drops: the last
    n % batch_size entries of the same permutation (same `rng`), as (n % batch_size,)
    int32. An epoch that keeps it takes it as one more step after the full
    batches, as a PyTorch DataLoader with drop_last=False does."""
    n_batches = n // batch_size
    return jax.random.permutation(rng, n)[n_batches * batch_size:].astype(jnp.int32)


def eval_batches(n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices covering every row once, as (n_batches, batch_size) padded with 0, and its mask.

    Fixed-shape batches for evaluation passes; drop the padded rows with `mask`.
    """
    n_batches = -(-n // batch_size)
    idx = np.arange(n_batches * batch_size, dtype=np.int32)
    mask = idx < n
    return np.where(mask, idx, 0).reshape(n_batches, batch_size), mask.reshape(n_batches, batch_size)
