"""Tests for dcjax.data: loading, fetching (offline, on fake files), checks, batching."""
import gzip
import struct
import urllib.error
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from dcjax import data

SHARED = data.DEFAULT_DATA_DIR


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs offline: a fetch that reaches for a URL fails like a blocked network."""
    real = data.fetch_bytes

    def offline(location):
        if location.startswith(("http://", "https://")):
            raise urllib.error.URLError("network blocked in tests")
        return real(location)

    monkeypatch.setattr(data, "fetch_bytes", offline)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


# ---------------------------------------------------------------- built-ins

def test_digits_is_an_image_set_normalised_over_all_pixels():
    d = data.load_dataset({"name": "digits"})
    assert d.x.shape == (1797, 64) and d.x.dtype == np.float32
    assert d.y.dtype == np.int64 and d.n_clusters == 10
    assert (d.name, d.kind) == ("digits", "image")
    assert abs(d.x.mean()) < 1e-5 and abs(d.x.std() - 1) < 1e-5
    assert abs(d.x[:, 0].std()) < 1e-6   # the always-blank corner pixel is not blown up


def test_blobs_from_configdict_are_feature_normalised():
    cfg = ml_collections.ConfigDict(dict(data.DEFAULTS, name="blobs", n_samples=300,
                                         n_features=4, blob_clusters=3))
    d = data.load_dataset(cfg)
    assert d.x.shape == (300, 4) and d.kind == "tabular" and d.n_clusters == 3
    np.testing.assert_allclose(d.x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x.std(0), 1, atol=1e-5)
    again = data.load_dataset({"name": "blobs", "n_samples": 300, "n_features": 4, "blob_clusters": 3})
    np.testing.assert_array_equal(d.x, again.x)   # plain dict, same seed, same data


def test_n_clusters_and_normalize_overrides():
    d = data.load_dataset({"name": "digits", "n_clusters": 7, "normalize": "none"})
    assert d.n_clusters == 7 and d.x.max() == 16.0


def test_subsample_is_stratified_and_fixed_by_seed():
    cfg = {"name": "digits", "subsample": 100}
    a, b = data.load_dataset(cfg), data.load_dataset(cfg)
    c = data.load_dataset({**cfg, "subsample_seed": 1})
    assert a.x.shape == (100, 64) and a.n_clusters == 10
    assert set(np.bincount(a.y)) <= {9, 10, 11}
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_subsample_without_labels_or_too_few_rows_per_class_is_random():
    rows = data.subsample_rows(None, 50, 10, seed=0)
    assert len(np.unique(rows)) == 10 and np.all(np.diff(rows) > 0)
    y = np.array([0] * 9 + [1])                      # class 1 has one member
    assert len(data.subsample_rows(y, 10, 5, seed=0)) == 5
    np.testing.assert_array_equal(data.subsample_rows(y, 10, 99, seed=0), np.arange(10))


def test_unknown_and_missing_names():
    with pytest.raises(ValueError, match=r"unknown data set 'cifar'.*digits.*mnist.*usps.*tfds:<name>"):
        data.load_dataset({"name": "cifar"})
    with pytest.raises(ValueError, match="name"):
        data.load_dataset({"normalize": "auto"})


# ---------------------------------------------------------------- normalisation

def test_normalize_modes():
    x = np.array([[0, 10, 5], [2, 30, 5], [4, 50, 5]], np.float32)
    feat = data.normalize(x, "tabular")
    np.testing.assert_allclose(feat[:, :2].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(feat[:, :2].std(0), 1, atol=1e-6)
    np.testing.assert_array_equal(feat[:, 2], 0)          # constant column stays 0
    chan = data.normalize(x, "image")
    np.testing.assert_allclose([chan.mean(), chan.std()], [0, 1], atol=1e-6)
    np.testing.assert_allclose(chan, (x - x.mean()) / x.std(), rtol=1e-5)
    np.testing.assert_array_equal(data.normalize(x, "feature"), feat)
    np.testing.assert_array_equal(data.normalize(x, "none"), x)
    np.testing.assert_array_equal(data.normalize(np.full((3, 2), 0.1, np.float32), "feature"), 0)
    with pytest.raises(ValueError, match="unknown normalisation 'minmax'"):
        data.normalize(x, "minmax")


# ---------------------------------------------------------------- data dir and .npz files

def test_data_dir_precedence(monkeypatch, tmp_path):
    assert SHARED == Path(data.__file__).resolve().parents[2] / "shared" / "data"
    assert data.data_dir("") == SHARED
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data.data_dir("") == tmp_path / "env"
    assert data.data_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"


def _write_npz(folder, name, x, y):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{name}.npz", x=x, y=y)


def test_npz_from_env_dir_and_nan_check(monkeypatch, tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    _write_npz(tmp_path, "pendigits", x, np.arange(10) % 2)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    d = data.load_dataset({"name": "pendigits", "normalize": "none"})
    np.testing.assert_array_equal(d.x, x)
    assert d.kind == "tabular" and d.n_clusters == 2
    x[3, 1] = np.nan
    _write_npz(tmp_path, "pendigits", x, np.arange(10) % 2)
    with pytest.raises(ValueError, match=r"1 NaN/inf values in 1 rows \(first row 3\)"):
        data.load_dataset({"name": "pendigits"})


# N, d, k of the shared copies (shared/data/README.md).
REAL = {"usps": (9298, 256), "optdigits": (5620, 64), "pendigits": (10992, 16),
        "mnist": (70000, 784), "fmnist": (70000, 784)}


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared/data beside the checkout")
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_data_sets_load(name):
    d = data.load_dataset({"name": name, "subsample": 200})
    assert d.x.shape == (200, REAL[name][1]) and d.x.dtype == np.float32
    assert d.n_clusters == 10 and set(d.y) == set(range(10))
    data.validate(d.x, d.y, d.n_clusters, batch_size=64)


# ---------------------------------------------------------------- fetching (offline)

def test_missing_file_and_no_network_names_file_dir_env_and_source(tmp_path):
    folder = tmp_path / "does" / "not" / "exist"
    with pytest.raises(FileNotFoundError) as e:
        data.load_dataset({"name": "usps", "data_dir": str(folder)})
    msg = str(e.value)
    for part in (str(folder / "usps.npz"), str(folder), "DCJAX_DATA_DIR",
                 "Elements of Statistical Learning", "zip.train.gz", "network blocked"):
        assert part in msg
    assert not folder.exists()   # nothing created when nothing could be fetched


def test_fetch_function_is_the_one_network_door(monkeypatch, tmp_path):
    tried = []

    def blocked(location):
        tried.append(location)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data, "fetch_bytes", blocked)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST"):
        data.load_dataset({"name": "fmnist", "data_dir": str(tmp_path)})
    # Debian's package folder first, then the public mirror.
    assert tried[0] == "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    assert tried[-1].startswith("http://fashion-mnist.s3-website")


def _idx(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _fake_sources(folder: Path) -> dict:
    """Tiny files in each canonical format, and the (x, y) each data set should give."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    want = {}
    usps = [rng.uniform(-1, 1, (n, 256)).round(4).astype(np.float32) for n in (3, 2)]
    ylab = [np.array([6, 5, 4]), np.array([9, 0])]
    for f, x, y in zip(("zip.train.gz", "zip.test.gz"), usps, ylab):
        text = "\n".join(f"{lab:.4f} " + " ".join(f"{v:.4f}" for v in row) for lab, row in zip(y, x))
        (folder / f).write_bytes(gzip.compress(text.encode() + b" \n"))
    want["usps"] = (np.concatenate(usps), np.concatenate(ylab))
    for name, d in (("optdigits", 64), ("pendigits", 16)):
        xs = [rng.integers(0, 17, (n, d)) for n in (4, 2)]
        ys = [np.array([0, 1, 2, 1]), np.array([3, 0])]
        for ext, x, y in zip((".tra", ".tes"), xs, ys):
            lines = [",".join(f"{v:3d}" for v in (*row, lab)) for row, lab in zip(x, y)]  # pendigits pads
            (folder / (name + ext)).write_text("\r\n".join(lines) + "\r\n")
        want[name] = (np.concatenate(xs).astype(np.float32), np.concatenate(ys))
    imgs = [rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (3, 2)]
    labs = [np.array([7, 2, 1], np.uint8), np.array([0, 4], np.uint8)]
    for (fi, fl), x, y in zip(data._IDX_FILES, imgs, labs):
        (folder / fi).write_bytes(gzip.compress(_idx(x)))
        (folder / fl).write_bytes(gzip.compress(_idx(y)))
    want["mnist"] = want["fmnist"] = (np.concatenate(imgs).reshape(5, 784), np.concatenate(labs))
    return want


def test_fetch_parses_each_canonical_format_into_npz(monkeypatch, tmp_path):
    fake = tmp_path / "sources"
    want = _fake_sources(fake)
    fetched = []

    def from_fake(location):   # serve every URL or folder from the fake files
        fetched.append(location)
        return (fake / Path(location).name).read_bytes()

    monkeypatch.setattr(data, "fetch_bytes", from_fake)
    out = tmp_path / "data"
    for name, (x, y) in want.items():
        d = data.load_dataset({"name": name, "data_dir": str(out), "normalize": "none",
                               "n_clusters": 2})
        np.testing.assert_array_equal(d.x, x.astype(np.float32))
        np.testing.assert_array_equal(d.y, y)
        with np.load(out / f"{name}.npz") as f:   # the shared README's format
            assert sorted(f.files) == ["x", "y"]
            assert f["x"].dtype == x.dtype and f["y"].dtype == np.int64
    n = len(fetched)
    data.load_dataset({"name": "usps", "data_dir": str(out), "n_clusters": 2})
    assert len(fetched) == n                      # second load reads the .npz, no fetch
    assert not list(out.glob("*.part"))


def test_unwritable_data_dir_still_returns_the_fetched_data(monkeypatch, tmp_path):
    want = _fake_sources(tmp_path / "sources")["optdigits"]
    monkeypatch.setattr(data, "fetch_bytes", lambda loc: (tmp_path / "sources" / Path(loc).name).read_bytes())
    (tmp_path / "a_file").write_text("")
    d = data.load_dataset({"name": "optdigits", "data_dir": str(tmp_path / "a_file" / "data"),
                           "normalize": "none"})
    np.testing.assert_array_equal(d.x, want[0])


def test_garbage_from_a_mirror_moves_on_to_the_next(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "fetch_bytes", lambda loc: b"<html>Forbidden</html>")
    with pytest.raises(FileNotFoundError, match=r"(?s)yann.lecun.com.*not an unsigned-byte IDX"
                                                r".*cvdf-datasets.*not an unsigned-byte IDX"):
        data.load_dataset({"name": "mnist", "data_dir": str(tmp_path)})


# ---------------------------------------------------------------- tensorflow-datasets

def test_tfds_mock_without_network():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        d = data.load_dataset({"name": "tfds:mnist", "normalize": "none", "n_clusters": 3})
        t = data.load_dataset({"name": "tfds:mnist:train"})
    assert d.x.shape == (12, 784) and d.x.dtype == np.float32 and d.kind == "image"
    assert d.y.dtype == np.int64 and d.y.shape == (12,) and d.x.max() <= 255
    assert t.name == "tfds:mnist:train" and t.x.shape == (12, 784)


def test_tfds_reads_prepared_array_record_files(tmp_path):
    """The real (unmocked) read path: data prepared in ArrayRecord format, read back
    from its folder alone (no builder code, no TensorFlow), train and test splits."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinySet(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):   # a Tensor, not an Image: encoding PNGs would need TensorFlow
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(2, 2, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=3)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(5, 0), "test": self._generate_examples(3, 100)}

        def _generate_examples(self, n, first):
            for i in range(first, first + n):
                yield i, {"image": np.full((2, 2, 1), i, np.uint8), "label": i % 3}

    TinySet(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    d = data.load_dataset({"name": "tfds:tiny_set", "data_dir": str(tmp_path), "normalize": "none"})
    assert d.x.shape == (8, 4) and d.n_clusters == 3
    assert sorted(d.x[:, 0]) == [0, 1, 2, 3, 4, 100, 101, 102]
    np.testing.assert_array_equal(d.y, d.x[:, 0].astype(int) % 3)
    test = data.load_dataset({"name": "tfds:tiny_set:test", "data_dir": str(tmp_path)})
    assert len(test.x) == 3


def test_tfds_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"dcjax\[tfds\]"):
        data.load_dataset({"name": "tfds:mnist"})


# ---------------------------------------------------------------- validate

X = np.arange(30, dtype=np.float32).reshape(10, 3)   # distinct rows: identical ones are refused


@pytest.mark.parametrize("x, y, k, bs, match", [
    (np.where(np.eye(10, 3), np.inf, 0), None, 2, 5, "NaN/inf"),
    (np.full((10, 3), np.nan), None, 2, 5, "NaN/inf"),
    (X, None, 6, 5, "fewer than 2 per cluster"),
    (X, None, 1, 5, "at least 2"),
    (X, None, 11, 5, "more than the 10 samples"),
    (X, None, 2, 11, "batch_size=11"),
    (X, None, 2, 0, "batch_size=0"),
    (X, np.zeros(9), 2, 5, r"labels must have shape \(10,\)"),
    (np.zeros(10), None, 2, 5, r"\(N, d\)"),
])
def test_validate_rejects(x, y, k, bs, match):
    with pytest.raises(ValueError, match=match):
        data.validate(x, y, k, bs)


def test_validate_accepts_good_input():
    data.validate(X, np.zeros(10, np.int64), 5, 10)
    data.validate(X.astype(np.uint8), None, 2, 1)


# ---------------------------------------------------------------- batching

def test_batch_indices_permutation_drops_ragged_batch():
    b = data.batch_indices(jax.random.PRNGKey(0), 10, 3)
    assert b.shape == (3, 3) and b.dtype == np.int32
    assert len(np.unique(b)) == 9 and b.min() >= 0 and b.max() < 10
    with pytest.raises(ValueError, match="larger than the 4 samples"):
        data.batch_indices(jax.random.PRNGKey(0), 4, 5)


def test_batch_indices_jit_and_vmap_over_keys():
    keys = jax.random.split(jax.random.key(1), 4)
    jitted = jax.jit(data.batch_indices, static_argnums=(1, 2))
    vmapped = jax.jit(jax.vmap(lambda k: data.batch_indices(k, 20, 4)))(keys)
    assert vmapped.shape == (4, 5, 4)
    np.testing.assert_array_equal(vmapped[2], jitted(keys[2], 20, 4))
    np.testing.assert_array_equal(np.sort(vmapped.reshape(4, -1), 1), np.tile(np.arange(20), (4, 1)))
    assert len({tuple(np.asarray(v).ravel()) for v in vmapped}) == 4   # one order per key


@pytest.mark.parametrize("n, bs", [(10, 4), (8, 4), (3, 5)])
def test_eval_batches_cover_every_row_once(n, bs):
    idx, mask = data.eval_batches(n, bs)
    assert idx.shape == mask.shape == (-(-n // bs), bs) and mask.dtype == bool
    np.testing.assert_array_equal(idx[mask], np.arange(n))
    assert np.all(idx[~mask] == 0)
