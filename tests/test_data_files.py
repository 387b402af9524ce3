"""Your own data from a file: CSV/TSV/NPY/NPZ, optional labels for evaluation
only, the normalisation rule, and every bad file refused before any compute
with a message that names the file and the line/row and column."""
import numpy as np
import pytest

from dcjax import data


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(path, **opt):
    return data.load_dataset({"name": path, **opt})


def test_csv_with_header_and_a_text_label_column(tmp_path):
    path = write(tmp_path, "d.csv", "a,b,kind\n1,2,x\n3,4,y\n5,8,x\n7,6,z\n")
    d = load(path, label_column="kind", normalize="none")
    np.testing.assert_array_equal(d.x, [[1, 2], [3, 4], [5, 8], [7, 6]])
    np.testing.assert_array_equal(d.y, [0, 1, 0, 2])          # labels: evaluation only
    assert d.n_clusters == 3 and d.kind == "tabular"


def test_unlabelled_csv_has_unknown_k_and_tsv_without_header(tmp_path):
    path = write(tmp_path, "d.csv", "a,b\n1,2\n3,4\n5,8\n")
    assert load(path).n_clusters == 0 and load(path).y is None   # unknown: the method asks for k (test_cli)
    assert load(path, n_clusters=2).n_clusters == 2
    d = load(write(tmp_path, "d.tsv", "1\t2\t0\n3\t4\t1\n5\t8\t1\n"), label_column="3", normalize="none")
    np.testing.assert_array_equal(d.x, [[1, 2], [3, 4], [5, 8]])   # no header: columns by 1-based number
    np.testing.assert_array_equal(d.y, [0, 1, 1])


def test_tabular_data_are_z_scored_per_feature(tmp_path):
    path = write(tmp_path, "d.csv", "a,b,c\n1,100,5\n2,300,5\n3,200,5\n")
    x = load(path, n_clusters=2).x
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(x.std(0), [1, 1, 0], atol=1e-6)    # a constant column becomes 0
    np.testing.assert_array_equal(load(path, n_clusters=2, normalize="none").x[:, 1], [100, 300, 200])


def test_npy_is_memory_mapped_and_images_are_z_scored_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((6, 4, 4, 3)).astype(np.float32) * np.array([1, 10, 100], np.float32)
    np.save(tmp_path / "img.npy", images)
    x, y, kind = data.load_file(tmp_path / "img.npy")
    assert isinstance(x, np.memmap) and y is None and kind == "image"
    d = load(str(tmp_path / "img.npy"), n_clusters=2)
    per_channel = d.x.reshape(6, 16, 3)
    np.testing.assert_allclose(per_channel.mean((0, 1)), 0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std((0, 1)), 1, atol=1e-5)
    assert d.x.shape == (6, 48)


def test_npz_with_and_without_labels(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    np.savez(tmp_path / "a.npz", x=x, y=[0, 0, 1, 1, 2, 2])
    d = load(str(tmp_path / "a.npz"), normalize="none")
    assert d.n_clusters == 3 and d.y.tolist() == [0, 0, 1, 1, 2, 2]
    np.savez(tmp_path / "b.npz", data=x)
    with pytest.raises(data.DataError, match=r"b.npz: no array 'x' \(it has data\)"):
        load(str(tmp_path / "b.npz"), n_clusters=2)


@pytest.mark.parametrize("text, match", [
    ("", r"d.csv: the file is empty"),
    ("\n\n", r"d.csv: the file is empty"),
    ("a,b\n", r"d.csv: a header but no data rows"),
    ("a,b\n1,2\n", r"d.csv: a single data row \(line 2\)"),
    ("a,b,a\n1,2,3\n4,5,6\n", r"d.csv: duplicate column name 'a' \(columns 1 and 3\)"),
    ("a,b\n1,2\n3\n5,6\n", r"d.csv line 3: 1 field, but 2 in the header \(a ragged row\)"),
    ("1,2\n3,4,5\n", r"d.csv line 2: 3 fields, but 2 in line 1"),
    ("a,b,name\n1,2,x\n3,4,y\n", r"d.csv line 2, column 'name': 'x', not a number"),
    ("a,b\n1,2\n3,\n", r"d.csv line 3, column 'b': an empty value"),
    ("a,b\n1,2\n3,nan\n", r"d.csv line 3, column 'b': nan; remove or impute"),
    ("a,b\n1,2\n3,4\n-inf,4\n", r"d.csv line 4, column 'a': -inf"),
])
def test_bad_csv_is_refused_naming_file_line_and_column(tmp_path, text, match):
    with pytest.raises(data.DataError, match=match):
        load(write(tmp_path, "d.csv", text), n_clusters=2)


def test_bad_label_column_and_missing_file(tmp_path):
    path = write(tmp_path, "d.csv", "a,b\n1,2\n3,4\n")
    with pytest.raises(data.DataError, match=r"no column 'kind' for dataset.label_column; the columns are 'a', 'b'"):
        load(path, label_column="kind")
    with pytest.raises(data.DataError, match=r"nothere.csv: no such file"):
        load(str(tmp_path / "nothere.csv"), n_clusters=2)


@pytest.mark.parametrize("array, match", [
    (np.zeros((0, 3)), r"x.npy: the array is empty"),
    (np.zeros((1, 3)), r"x.npy: a single row"),
    (np.zeros(5), r"x.npy: an array of shape \(5,\)"),
    (np.where(np.arange(12).reshape(4, 3) == 7, np.inf, 0.0), r"x.npy: row 2, column 1 .* is inf"),
    (np.array([["a", "b"], ["c", "d"]]), r"x.npy: the data are <U1, not numbers"),
])
def test_bad_npy_is_refused_naming_row_and_column(tmp_path, array, match):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(data.DataError, match=match):
        load(str(tmp_path / "x.npy"), n_clusters=2)


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(data.DataError, match="not a readable NumPy file without pickled objects"):
        load(str(tmp_path / "x.npy"), n_clusters=2)


# ---------------------------------------------------------------- files as people save them (issue 30)

def wine_frame():
    import pandas as pd
    from sklearn.datasets import load_wine
    x, y = load_wine(return_X_y=True)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    return frame.assign(label=y), x, y


def test_a_byte_order_mark_loses_no_row_and_no_column_name(tmp_path):
    frame, x, y = wine_frame()
    (tmp_path / "plain.csv").write_text("\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n",
                                        encoding="utf-8-sig")
    np.testing.assert_array_equal(data.load_file(tmp_path / "plain.csv")[0], x)   # all 178 rows
    frame.to_csv(tmp_path / "header.csv", index=False, encoding="utf-8-sig")
    got, labels, _ = data.load_file(tmp_path / "header.csv", "label")   # not '\ufefflabel'
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(labels, y)


def test_a_latin1_file_is_read_with_a_warning(tmp_path, caplog):
    frame, x, y = wine_frame()
    frame.rename(columns={"f0": "Größe"}).assign(label=np.array(["süß", "herb", "trocken"])[y]).to_csv(
        tmp_path / "d.csv", index=False, encoding="latin-1")
    with caplog.at_level("WARNING", logger="dcjax"):
        got, labels, _ = data.load_file(tmp_path / "d.csv", "label")
    np.testing.assert_array_equal(got, x)
    assert len(np.unique(labels)) == 3
    assert any("not UTF-8 (byte 0xf6); reading it as Latin-1" in r.message for r in caplog.records)


def test_a_value_beyond_float32_is_named_by_line_and_column(tmp_path):
    frame, _, _ = wine_frame()
    frame.loc[4, "f3"] = 1e300
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(data.DataError, match=r"d.csv line 6, column 'f3': 1e\+300 is beyond float32's range"):
        load(str(tmp_path / "d.csv"), label_column="label")
    np.save(tmp_path / "x.npy", np.where(np.arange(12).reshape(4, 3) == 7, 1e300, 1.0))
    with pytest.raises(data.DataError, match=r"x.npy: row 2, column 1 .* 1e\+300, beyond float32's range"):
        load(str(tmp_path / "x.npy"), n_clusters=2)


def test_pandas_default_header_and_saved_index_are_not_data(tmp_path, caplog):
    import pandas as pd
    _, x, _ = wine_frame()
    pd.DataFrame(x).to_csv(tmp_path / "names.csv", index=False)   # header 0,1,...,12
    np.testing.assert_array_equal(data.load_file(tmp_path / "names.csv")[0], x)
    pd.DataFrame(x).to_csv(tmp_path / "index.csv")                # header ,0,1,...; an index column
    with caplog.at_level("WARNING", logger="dcjax"):
        np.testing.assert_array_equal(data.load_file(tmp_path / "index.csv")[0], x)
    assert any("a saved DataFrame index; it is left out" in r.message for r in caplog.records)


def test_excel_semicolons_with_decimal_commas_and_gzip_and_tsv(tmp_path):
    frame, x, y = wine_frame()
    frame.to_csv(tmp_path / "excel.csv", index=False, sep=";", decimal=",")
    frame.to_csv(tmp_path / "d.csv.gz", index=False)
    frame.to_csv(tmp_path / "d.tsv.gz", index=False, sep="\t")
    for name in ("excel.csv", "d.csv.gz", "d.tsv.gz"):
        got, labels, kind = data.load_file(tmp_path / name, "label")
        np.testing.assert_array_equal(got, x)
        np.testing.assert_array_equal(labels, y)
    assert data.is_file_name("d.csv.gz") and data.load_dataset({"name": str(tmp_path / "d.csv.gz"), "label_column": "label"}).n_clusters == 3


def test_identical_rows_are_refused_before_training(tmp_path):
    _, x, _ = wine_frame()
    np.savetxt(tmp_path / "same.csv", np.tile(x[:1], (178, 1)), delimiter=",")
    d = load(str(tmp_path / "same.csv"), n_clusters=3)
    with pytest.raises(data.DataError, match=r"same.csv: all 178 rows are identical"):
        data.validate(d.x, d.y, 3, 64, d.name)
    with pytest.raises(data.DataError, match=r"only 2 distinct rows for 3 clusters"):
        data.validate(np.repeat(np.eye(2, 3), 5, axis=0), None, 3, 4)


def test_the_pandas_reader_gives_what_the_line_by_line_reader_gives(tmp_path):
    """Both readers must agree: the second only explains what the first refused."""
    frame, x, y = wine_frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    layout = data._layout(tmp_path / "d.csv", None, "utf-8-sig")
    fast = data._read_fast(tmp_path / "d.csv", layout, list(range(13)), 13)
    slow = data._read_slow(tmp_path / "d.csv", layout, list(range(13)), 13)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
