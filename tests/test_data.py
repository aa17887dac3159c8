"""Data module: DataLoader, splitting, standardisation, built-in sets and file readers."""
from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from lepton_kernels import data as D


# ----------------------------------------------------------------------- DataLoader


def _xy(n=10):
    return np.arange(n * 3, dtype=np.float32).reshape(n, 3), np.arange(n, dtype=np.int64)


def test_loader_batches_in_order_without_shuffle():
    x, y = _xy(10)
    loader = D.DataLoader((x, y), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 == len(batches)
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    np.testing.assert_array_equal(batches[2][0], x[8:])


def test_loader_drop_last_and_len():
    x, y = _xy(10)
    assert len(D.DataLoader((x, y), batch_size=4, drop_last=True)) == 2
    assert [len(b[1]) for b in D.DataLoader((x, y), batch_size=4, drop_last=True)] == [4, 4]
    assert len(D.DataLoader((x, y), batch_size=5)) == 2
    assert len(D.DataLoader((x, y), batch_size=11, drop_last=True)) == 0
    assert list(D.DataLoader((x[:0], y[:0]), batch_size=3)) == []


def test_loader_shuffle_is_seeded_and_reshuffles_each_epoch():
    x, y = _xy(50)
    a = D.DataLoader((x, y), batch_size=8, shuffle=True, seed=3)
    b = D.DataLoader((x, y), batch_size=8, shuffle=True, seed=3)
    ea1 = np.concatenate([yb for _, yb in a])
    ea2 = np.concatenate([yb for _, yb in a])
    eb1 = np.concatenate([yb for _, yb in b])
    eb2 = np.concatenate([yb for _, yb in b])
    np.testing.assert_array_equal(ea1, eb1)
    np.testing.assert_array_equal(ea2, eb2)
    assert not np.array_equal(ea1, ea2)
    assert sorted(ea1.tolist()) == list(range(50))
    for xb, yb in D.DataLoader((x, y), batch_size=7, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb, x[yb])  # rows stay paired


def test_loader_single_array_and_dataset_object():
    x, y = _xy(5)
    assert [b.shape for b in D.DataLoader(x, batch_size=2)] == [(2, 3), (2, 3), (1, 3)]

    class DS:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return x[i], int(y[i])

    batches = list(D.DataLoader(DS(), batch_size=2, shuffle=True, seed=0))
    assert len(batches) == 3
    for xb, yb in batches:
        assert yb.dtype == np.int64
        np.testing.assert_array_equal(xb, x[yb])
    samples = [(x[i], i) for i in range(5)]
    assert [b[1].tolist() for b in D.DataLoader(samples, batch_size=3)] == [[0, 1, 2], [3, 4]]


@pytest.mark.parametrize("bs", [0, -1])
def test_loader_bad_batch_size(bs):
    with pytest.raises(ValueError, match="batch_size"):
        D.DataLoader(_xy(), batch_size=bs)


def test_loader_type_and_length_errors():
    x, y = _xy(5)
    with pytest.raises(TypeError, match="batch_size"):
        D.DataLoader((x, y), batch_size=2.0)
    with pytest.raises(ValueError, match="same length"):
        D.DataLoader((x, y[:4]))
    with pytest.raises(TypeError):
        D.DataLoader(42)


# ----------------------------------------------------------------------- split / standardise


def test_split_sizes_and_pairing():
    x, y = _xy(10)
    x_tr, x_te, y_tr, y_te = D.train_test_split(x, y, test_size=0.25, seed=0)
    assert len(x_te) == 3 and len(x_tr) == 7  # ceil(0.25 * 10), as in scikit-learn
    np.testing.assert_array_equal(x_tr[:, 0] / 3, y_tr)
    assert sorted(np.concatenate([y_tr, y_te]).tolist()) == list(range(10))
    again = D.train_test_split(x, y, test_size=0.25, seed=0)
    np.testing.assert_array_equal(again[3], y_te)
    assert len(D.train_test_split(x, test_size=4)[1]) == 4


def test_split_without_shuffle_keeps_order():
    x, y = _xy(10)
    _, _, y_tr, y_te = D.train_test_split(x, y, test_size=0.2, shuffle=False)
    assert y_tr.tolist() == list(range(8)) and y_te.tolist() == [8, 9]


def test_split_stratified_keeps_proportions():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    x = np.arange(100)
    x_tr, x_te, y_tr, y_te = D.train_test_split(x, y, test_size=0.2, seed=1, stratify=y)
    assert np.bincount(y_te).tolist() == [12, 6, 2]
    np.testing.assert_array_equal(y[x_te], y_te)
    assert len(set(x_tr.tolist()) | set(x_te.tolist())) == 100


@pytest.mark.parametrize("kwargs", [
    {"test_size": 0.0}, {"test_size": 1.0}, {"test_size": 0}, {"test_size": 10}, {"test_size": -0.5},
    {"stratify": np.arange(10)}, {"shuffle": False, "stratify": np.zeros(10)},
])
def test_split_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        D.train_test_split(*_xy(10), **kwargs)


def test_split_mismatched_lengths():
    x, y = _xy(10)
    with pytest.raises(ValueError, match="different lengths"):
        D.train_test_split(x, y[:9])
    with pytest.raises(ValueError):
        D.train_test_split()


def test_standardize_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    train = rng.normal(5, 3, (200, 4)).astype(np.float32)
    train[:, 3] = 7.0  # constant feature
    test = rng.normal(5, 3, (50, 4)).astype(np.float32)
    tr, te, (mean, std) = D.standardize(train, test)
    assert tr.dtype == np.float32 and te.dtype == np.float32
    np.testing.assert_allclose(tr[:, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(tr[:, :3].std(0), 1, atol=1e-5)
    assert np.all(tr[:, 3] == 0) and std[3] == 1.0
    np.testing.assert_allclose(te, (test - mean) / std, rtol=1e-5, atol=1e-5)
    s = D.Standardizer().fit(train)
    np.testing.assert_allclose(s.inverse_transform(s.transform(test)), test, rtol=1e-5, atol=1e-5)


def test_standardize_errors():
    with pytest.raises(ValueError):
        D.standardize(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        D.standardize(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="incompatible"):
        D.standardize(np.ones((4, 3)), np.ones((4, 2)))


# ----------------------------------------------------------------------- built-in sets


def test_builtin_datasets():
    pytest.importorskip("sklearn")
    x, y = D.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0 and set(y.tolist()) == set(range(10))
    x, y = D.load_diabetes()
    assert x.shape == (442, 10) and x.dtype == np.float32 and y.shape == (442,) and y.dtype == np.float32
    x, y = D.load_breast_cancer()
    assert x.shape == (569, 30) and x.dtype == np.float32 and y.dtype == np.int64
    assert set(y.tolist()) == {0, 1}


def test_builtin_datasets_without_sklearn(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"lepton-kernels\[data\]"):
        D.load_digits()


# ----------------------------------------------------------------------- IDX / MNIST


def _idx_bytes(arr: np.ndarray, code=0x08) -> bytes:
    dt = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(dt).tobytes()


def _write_mnist(directory, kind, n=6, gz=True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    for name, arr in ((f"{kind}-images-idx3-ubyte", images), (f"{kind}-labels-idx1-ubyte", labels)):
        raw = _idx_bytes(arr)
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_plain_and_gzip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx_bytes(arr)
    path = tmp_path / "a.idx"  # gzip detected by magic bytes, not by the name
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = D.read_idx(path)
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, arr)


def test_read_idx_other_dtypes(tmp_path):
    a = np.array([[1, -2], [300, -400]], dtype=np.int16)
    (tmp_path / "i").write_bytes(_idx_bytes(a, 0x0B))
    np.testing.assert_array_equal(D.read_idx(tmp_path / "i"), a)
    f = np.array([1.5, -2.25], dtype=np.float32)
    (tmp_path / "f").write_bytes(_idx_bytes(f, 0x0D))
    out = D.read_idx(tmp_path / "f")
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, f)


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:10], "truncated"),
    (lambda b: b[:2], "too short"),
    (lambda b: b + b"\0", "unexpected bytes"),
    (lambda b: b"\x00\x00\x08\x00" + b[4:], "0 dimensions"),
    (lambda b: b"\x00\x00\x07" + b[3:], "magic"),
    (lambda b: b"\x01\x00" + b[2:], "magic"),
    (lambda b: b"", "too short"),
])
def test_read_idx_bad_files(tmp_path, mutate, match):
    raw = _idx_bytes(np.zeros((3, 4, 4), np.uint8))
    path = tmp_path / "bad-idx"
    path.write_bytes(mutate(raw))
    with pytest.raises(ValueError, match=match) as info:
        D.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip(tmp_path):
    raw = gzip.compress(_idx_bytes(np.arange(600, dtype=np.uint8).reshape(6, 10, 10)))
    (tmp_path / "g").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="gzip"):
        D.read_idx(tmp_path / "g")


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    images, labels = _write_mnist(tmp_path, "train", n=6, gz=gz)
    _write_mnist(tmp_path, "t10k", n=3, gz=gz)
    x, y = D.load_mnist(tmp_path)
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0] * 255, images, atol=1e-3)
    np.testing.assert_array_equal(y, labels)
    assert D.load_mnist(tmp_path, kind="t10k")[0].shape == (3, 1, 28, 28)


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        D.load_mnist(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        D.load_mnist(tmp_path, kind="validation")
    _write_mnist(tmp_path, "train", n=6, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="6 images"):
        D.load_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros((6, 2, 2), np.uint8)))
    with pytest.raises(ValueError, match="labels of shape"):
        D.load_mnist(tmp_path)


# ----------------------------------------------------------------------- CIFAR-10


def _cifar_records(n, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else np.asarray(labels, np.uint8)
    raw = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1).tobytes()
    return raw, images, labels


def test_read_cifar10_binary(tmp_path):
    raw, images, labels = _cifar_records(4)
    (tmp_path / "b.bin").write_bytes(raw)
    x, y = D.read_cifar10_binary(tmp_path / "b.bin")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert y.dtype == np.int64


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:-1], "not a multiple"),
    (lambda b: b + b"\0" * 5, "not a multiple"),
    (lambda b: b"", "empty"),
    (lambda b: b"\x0a" + b[1:], "label 10"),
])
def test_read_cifar10_binary_bad(tmp_path, mutate, match):
    raw, _, _ = _cifar_records(2)
    (tmp_path / "b.bin").write_bytes(mutate(raw))
    with pytest.raises(ValueError, match=match):
        D.read_cifar10_binary(tmp_path / "b.bin")


def _py2_cifar_pickle(raw: bytes, labels) -> bytes:
    """A batch as Python 2's cPickle wrote CIFAR-10 (protocol 2, str data, numpy.core)."""
    n = len(raw) // 3072
    b = b"\x80\x02}(U\x04data"
    b += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
    b += b"(K\x01M" + struct.pack("<H", n) + b"M\x00\x0c\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
    b += b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<I", len(raw))
    b += raw + b"tbU\x06labels](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"eu."
    return b


@pytest.mark.parametrize("style", ["py2", "protocol2", "protocol5"])
def test_read_cifar10_python(tmp_path, style):
    _, images, labels = _cifar_records(3)
    flat = images.reshape(3, -1)
    if style == "py2":
        blob = _py2_cifar_pickle(flat.tobytes(), labels)
    else:
        batch = {b"data": flat, b"labels": labels.tolist(), b"batch_label": b"x", b"filenames": [b"a"] * 3}
        blob = pickle.dumps(batch, protocol=int(style[-1]))
    (tmp_path / "data_batch_1").write_bytes(blob)
    x, y = D.read_cifar10_python(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_read_cifar10_python_refuses_code(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.remove, (str(tmp_path / "canary"),))

    (tmp_path / "canary").write_text("alive")
    (tmp_path / "evil").write_bytes(pickle.dumps({"data": Boom(), "labels": []}))
    with pytest.raises(ValueError, match="refused"):
        D.read_cifar10_python(tmp_path / "evil")
    assert (tmp_path / "canary").exists()
    obj = np.array([object()], dtype=object)
    (tmp_path / "obj").write_bytes(pickle.dumps({"data": obj, "labels": [1]}))
    with pytest.raises(ValueError):
        D.read_cifar10_python(tmp_path / "obj")


def test_read_cifar10_python_bad_content(tmp_path):
    (tmp_path / "a").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [1, 2]}))
    with pytest.raises(ValueError, match="3072"):
        D.read_cifar10_python(tmp_path / "a")
    (tmp_path / "b").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 12]}))
    with pytest.raises(ValueError, match="label 12"):
        D.read_cifar10_python(tmp_path / "b")
    (tmp_path / "c").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)})[:-10])
    with pytest.raises(ValueError):
        D.read_cifar10_python(tmp_path / "c")


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_load_cifar10(tmp_path, fmt):
    folder = tmp_path / f"cifar-10-batches-{fmt}"
    folder.mkdir()
    all_images, all_labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        raw, images, labels = _cifar_records(2, seed=i)
        if fmt == "bin":
            (folder / (name + ".bin")).write_bytes(raw)
        else:
            batch = {b"data": images.reshape(2, -1), b"labels": labels.tolist()}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        all_images.append(images)
        all_labels.append(labels)
    x, y = D.load_cifar10(tmp_path, train=True)
    assert x.shape == (10, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x * 255, np.concatenate(all_images[:5]), atol=1e-3)
    np.testing.assert_array_equal(y, np.concatenate(all_labels[:5]))
    xt, yt = D.load_cifar10(folder, train=False)
    np.testing.assert_array_equal(yt, all_labels[5])
    os.remove(next(folder.glob("data_batch_3*")))
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        D.load_cifar10(folder)


# ----------------------------------------------------------------------- CSV


def test_read_csv_with_header_and_label_name(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label,c\n1,2,0,3\n4.5,-5,1,6e1\n\n")
    x, y = D.read_csv(tmp_path / "d.csv", label_column="label")
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, [[1, 2, 3], [4.5, -5, 60]])
    assert y.tolist() == [0, 1]


def test_read_csv_no_header_default_last_column(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,0.5\n3,4,1.5\n")
    x, y = D.read_csv(tmp_path / "d.csv")
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    assert y.dtype == np.float32 and y.tolist() == [0.5, 1.5]
    x, y = D.read_csv(tmp_path / "d.csv", label_column=None)
    assert x.shape == (2, 3) and y is None
    x, y = D.read_csv(tmp_path / "d.csv", label_column=0)
    assert y.tolist() == [1, 3]


@pytest.mark.parametrize("text, match", [
    ("a,b\n1,2\n3\n", "line 3 has 1 fields, expected 2"),
    ("a,b\n1,2\n3,x\n", "line 3, column 'b'"),
    ("1,2\n3,\n", "line 2, column 2: empty value"),
    ("a,b\n1,nan\n", "non-finite"),
    ("", "no rows"),
    ("a,b\n", "no data rows"),
])
def test_read_csv_bad_files(tmp_path, text, match):
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        D.read_csv(tmp_path / "d.csv")
    assert "d.csv" in str(info.value)


def test_read_csv_bad_label_column(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no column"):
        D.read_csv(tmp_path / "d.csv", label_column="y")
    with pytest.raises(ValueError, match="out of range"):
        D.read_csv(tmp_path / "d.csv", label_column=5)


def test_read_csv_quotes_blank_lines_and_line_numbers(tmp_path):
    (tmp_path / "q.csv").write_text('\n\n"a","b"\n"1","2"\n\n3,4\n')
    x, y = D.read_csv(tmp_path / "q.csv")
    np.testing.assert_array_equal(x, [[1], [3]])
    assert y.tolist() == [2, 4]
    (tmp_path / "l.csv").write_text("a,b\n1,2\n\n3,x\n")
    with pytest.raises(ValueError, match="line 4"):
        D.read_csv(tmp_path / "l.csv")


def test_read_csv_fast_and_slow_paths_agree(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4)).round(3)
    rows = "\n".join(",".join(repr(float(v)) for v in r) for r in a)
    (tmp_path / "fast.csv").write_text("w,x,y,z\n" + rows + "\n")
    (tmp_path / "slow.csv").write_text("w,x,y,z\n" + rows.replace("\n", "\n ", 1) + "\n")  # one odd space
    fx, fy = D.read_csv(tmp_path / "fast.csv", label_column="x")
    sx, sy = D.read_csv(tmp_path / "slow.csv", label_column="x")
    np.testing.assert_array_equal(fx, sx)
    np.testing.assert_array_equal(fy, sy)
    np.testing.assert_array_equal(fy, a[:, 1].astype(np.float32))


@pytest.mark.parametrize("header", ["a,b,label\n", ""])
def test_read_csv_gzipped(tmp_path, header):
    text = header + "1,2,0\n3.5,-4,1\n"
    (tmp_path / "data.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "data.csv").write_text(text)
    x, y = D.read_csv(tmp_path / "data.csv.gz")
    np.testing.assert_array_equal(x, [[1, 2], [3.5, -4]])
    assert y.dtype == np.int64 and y.tolist() == [0, 1]
    px, py = D.read_csv(tmp_path / "data.csv")
    np.testing.assert_array_equal(x, px)
    np.testing.assert_array_equal(y, py)


def test_read_csv_refuses_nul_bytes_and_binary(tmp_path):
    (tmp_path / "n.csv").write_bytes(b"a,b\n1,2\n12\x003,4\n")  # numpy's parser would read 12
    with pytest.raises(ValueError, match=r"n.csv: line 3: NUL byte"):
        D.read_csv(tmp_path / "n.csv")
    (tmp_path / "n2.csv").write_bytes(b"1,2\n3,4\x00\n")
    with pytest.raises(ValueError, match="line 2: NUL byte"):
        D.read_csv(tmp_path / "n2.csv")
    (tmp_path / "bin.csv").write_bytes(b"a,b\n1,2\n\xff\xfe,3\n")
    with pytest.raises(ValueError, match=r"bin.csv: line 3: not UTF-8"):
        D.read_csv(tmp_path / "bin.csv")


@pytest.mark.parametrize("label_column", [1.5, 1.0, True, [0], b"a"])
def test_read_csv_label_column_must_be_an_int_or_a_name(tmp_path, label_column):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="label_column must be an int"):
        D.read_csv(tmp_path / "d.csv", label_column=label_column)
    assert D.read_csv(tmp_path / "d.csv", label_column=np.int64(0))[1].tolist() == [1]


def test_read_csv_shape_makes_images(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 2 * 3 * 4))
    labels = rng.integers(0, 10, 5)
    rows = "\n".join(",".join(map(str, [lab, *row])) for lab, row in zip(labels, pixels))
    (tmp_path / "img.csv").write_text("label," + ",".join(f"p{i}" for i in range(24)) + "\n" + rows + "\n")
    x, y = D.read_csv(tmp_path / "img.csv", label_column="label", shape=(2, 3, 4))
    assert x.shape == (5, 2, 3, 4) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x.reshape(5, -1), pixels)  # C order: channel, row, column
    assert y.tolist() == labels.tolist()
    assert D.read_csv(tmp_path / "img.csv", label_column=None, shape=[25])[0].shape == (5, 25)
    with pytest.raises(ValueError, match=r"shape \(1, 5, 5\) needs 25 feature columns; .*img.csv has 24"):
        D.read_csv(tmp_path / "img.csv", label_column="label", shape=(1, 5, 5))
    for bad in [(0, 4, 6), (2, -3, -4), 24, "1,28,28", (2.0, 3, 4), ()]:
        with pytest.raises(ValueError, match="shape must be"):
            D.read_csv(tmp_path / "img.csv", shape=bad)


def test_read_csv_refuses_directories_and_fifos(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        D.read_csv(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.csv")  # opening it would block until a writer came
        with pytest.raises(ValueError, match="not a regular file"):
            D.read_csv(tmp_path / "pipe.csv")


def test_read_csv_refuses_values_that_overflow_float32(tmp_path):
    (tmp_path / "big.csv").write_text("a,b\n1,2\n1e39,0\n")  # finite as float64, inf as float32
    with pytest.raises(ValueError, match=r"big.csv: line 3, column 'a': non-finite value '1e39'"):
        D.read_csv(tmp_path / "big.csv")
    x, _ = D.read_csv(tmp_path / "big.csv", allow_nonfinite=True)
    assert np.isinf(x[1, 0])
    (tmp_path / "edge.csv").write_text(f"{float(np.finfo(np.float32).max)!r},1\n")
    assert np.isfinite(D.read_csv(tmp_path / "edge.csv")[0]).all()
