"""OpenImages image banks (docs/method.md section 2.2) and the Perlin noise file (docs/method.md section 3).

**Reading the thesis files as they are.** The OpenImages bank is a directory holding
``train.hdf5``, ``valid.hdf5`` and ``test.hdf5``; each has one dataset ``images`` of shape
(n, 180, 180, 3) uint8 (HWC, RGB), n = 100000 and 9.5 GB per file in the thesis. An
*image id* of a mosaic label is a row of one split file. The Perlin noise file holds
``resolution1`` and ``resolution2``, each (n, 180, 270) int8. ``open_image_array`` opens
such a dataset after validating it from metadata alone and returns a lazily indexable
array of its rows:

* a contiguous, unfiltered dataset (how the thesis files and ours are written) becomes a
  read-only ``np.memmap`` at the dataset's offset in the file: no copy, reads go through
  the operating system's page cache, so several processes on one machine share one copy
  of the hot rows;
* a chunked or compressed dataset becomes an ``H5ImageRows``, which reads the sorted
  unique rows of a request chunk by chunk (each touched chunk decompressed once) and
  returns them in the caller's order;
* ``in_memory=True`` reads the whole dataset into RAM (the only case that reads 9.5 GB).

Every array carries an ``identity``: a sha256 of its dtype, shape and a fixed sample of
rows (the first, the last and 64 evenly spaced between, ``content_identity``). It tells
banks apart in the encoder's resume records without hashing 9.5 GB. Limitation: two banks
equal in dtype, shape and every sampled row but different elsewhere share an identity;
it detects a different or regenerated bank, not an edit of unsampled rows.

**Making banks.** ``import_photo_folder`` turns a folder of JPEG/PNG photographs into the
three split files (centre crops of 180x180, a deterministic split by a hash of each
photo's relative path), and ``prepare_embedded_bank`` writes the default bank used when
OpenImages cannot be downloaded: non-overlapping 180x180 crops of the real photographs
bundled in the scikit-image wheel. Both write contiguous ``images`` datasets without
object timestamps (identical inputs give identical bytes), with per-row provenance
datasets beside ``images``, and commit the three files all-or-nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np
from PIL import Image, ImageOps

from equihash.data.keyed import KeyedRandom
from equihash.io import InputError, atomic_path, open_hdf5
from equihash.progress import Progress, logger

OPENIMAGES_SPLITS = ("train", "valid", "test")
OPENIMAGES_DATASET = "images"
OPENIMAGES_IMAGE_SHAPE = (180, 180, 3)  # HWC RGB
PERLIN_DATASETS = ("resolution1", "resolution2")
PERLIN_FIELD_SHAPE = (180, 270)
#: Rows hashed by ``content_identity`` besides the first and the last.
IDENTITY_SAMPLE_ROWS = 64
#: Rows per block when reading a whole dataset or writing a split file.
BLOCK_ROWS = 1024
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}

#: The scikit-image sample files used by ``prepare_embedded_bank``: every real photograph of
#: the wheel's ``skimage/data`` folder at least 180 pixels on its shorter side. See that
#: function for the files left out and why.
EMBEDDED_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
)
#: The test split is the larger held-out split: its B^2 = 1600 labels leave room for a
#: database of 1000 draws with unused labels for the negative queries (docs/method.md section 4).
EMBEDDED_DEFAULT_SPLITS = {"valid": 20, "test": 40}
#: Images per split of the embedded bank with the default splits (scikit-image 0.26 sample
#: files), known before the bank is written; tests check ``prepare_embedded_bank`` agrees.
EMBEDDED_SPLIT_SIZES = {"train": 63, "valid": 20, "test": 40}
#: A crop is *flat* (mostly background) when more than FLAT_SHARE of its pixels are within
#: FLAT_TOLERANCE grey levels, in every channel, of the crop's median colour.
FLAT_TOLERANCE = 1
FLAT_SHARE = 0.5
#: A crop is *featureless* when the standard deviation of its values is below this (grey levels).
MIN_STD = 6.0


# --------------------------------------------------------------------------- identity
def identity_rows(n: int) -> np.ndarray:
    """The rows hashed by ``content_identity``: first, last and ``IDENTITY_SAMPLE_ROWS`` evenly
    spaced between (fewer when ``n`` is small), sorted and unique."""
    return np.unique(np.linspace(0, n - 1, IDENTITY_SAMPLE_ROWS + 2).round().astype(np.int64))


def content_identity(array) -> str:
    """A cheap content identity of an image array: sha256 hex of its dtype, shape and the bytes
    of the rows ``identity_rows(len(array))``.

    Equal content gives equal identities. It reads about 66 rows, so it cannot see a change
    confined to the other rows (see the module docstring).
    """
    shape, dtype = tuple(int(d) for d in array.shape), np.dtype(array.dtype)
    rows = identity_rows(shape[0])
    digest = hashlib.sha256(json.dumps({"dtype": dtype.str, "shape": shape, "rows": rows.tolist()}).encode())
    digest.update(np.ascontiguousarray(array[rows], dtype=dtype).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- lazy arrays
class InMemoryImages(np.ndarray):
    """An image array read into RAM (``in_memory=True``), carrying its ``identity``.

    Indexing returns plain ``np.ndarray`` objects.
    """

    identity: str | None = None

    def __getitem__(self, key):
        out = super().__getitem__(key)
        return out.view(np.ndarray) if isinstance(out, InMemoryImages) else out


class H5ImageRows:
    """The rows of a chunked or compressed HDF5 image dataset, read on demand.

    ``rows[i]`` is one image; ``rows[a:b:s]`` reads a slice; ``rows[ids]`` with an integer
    array of any shape (any order, repeats allowed, negative ids count from the end) or a
    boolean mask reads the sorted unique rows and returns an ndarray of shape
    ``(*ids.shape, *item_shape)`` in the caller's order. The sorted rows are cut into
    segments that each start in a chunk no earlier segment touched; a segment is read
    as one contiguous row range (one HDF5 read, each chunk decompressed once). One h5py
    fancy selection of the same rows would be far slower: HDF5 merges a selection of many
    separate hyperslabs in quadratic time (tens of times slower from a few hundred rows).
    The file is opened on first use, once per process, so the object can be pickled to
    worker processes.
    """

    def __init__(self, path, dataset: str, shape: tuple[int, ...], dtype):
        self.path, self.dataset = Path(path), dataset
        self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.identity: str | None = None
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"H5ImageRows({str(self.path)!r}, {self.dataset!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def __array__(self, dtype=None, copy=None):
        return self[:] if dtype is None else self[:].astype(dtype)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._pid = None

    def _rows(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file[self.dataset]

    def _empty(self, leading: tuple[int, ...]) -> np.ndarray:
        return np.empty((*leading, *self.shape[1:]), dtype=self.dtype)

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"{self.path}: row {int(key)} out of range for dataset '{self.dataset}' of {n} rows")
            return np.asarray(self._rows()[i], dtype=self.dtype)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step < 0:
                return self[np.arange(start, stop, step)]
            if len(range(start, stop, step)) == 0:
                return self._empty((0,))
            return np.asarray(self._rows()[start:stop:step], dtype=self.dtype)
        ids = np.asarray(key)
        if ids.dtype == bool:
            if ids.shape != (n,):
                raise IndexError(f"boolean mask of shape {ids.shape} for {n} rows")
            ids = np.flatnonzero(ids)
        if ids.dtype.kind not in "iu":
            raise IndexError(f"rows must be selected by an int, a slice or an integer array, got {ids.dtype}")
        flat = ids.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + n, flat)
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(f"{self.path}: row ids out of range for dataset '{self.dataset}' of {n} rows")
        if flat.size == 0:
            return self._empty(ids.shape)
        unique, inverse = np.unique(flat, return_inverse=True)
        block = self._read_sorted(unique)
        return block[inverse.reshape(-1)].reshape(*ids.shape, *self.shape[1:])

    def _read_sorted(self, rows: np.ndarray) -> np.ndarray:
        """The sorted unique ``rows``, read segment by segment (see the class docstring)."""
        x = self._rows()
        chunk_rows = x.chunks[0] if x.chunks else 1
        new_chunk = rows[1:] // chunk_rows != rows[:-1] // chunk_rows
        starts = np.concatenate([[0], np.flatnonzero(new_chunk & (rows[1:] != rows[:-1] + 1)) + 1])
        stops = np.append(starts[1:], len(rows))
        out = self._empty((len(rows),))
        for start, stop in zip(starts.tolist(), stops.tolist()):
            first, last = int(rows[start]), int(rows[stop - 1])
            if last - first + 1 == stop - start:  # a run of consecutive rows: read in place
                x.read_direct(out, np.s_[first:last + 1], np.s_[start:stop])
            else:
                span = self._empty((last - first + 1,))
                x.read_direct(span, np.s_[first:last + 1])
                out[start:stop] = span[rows[start:stop] - first]
        return out


# --------------------------------------------------------------------------- validation
def _expectation(dataset: str, item_shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"dataset '{dataset}' of shape (n, {', '.join(map(str, item_shape))}) {dtype}"


def _dataset_names(f: h5py.File) -> list[str]:
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _checked_dataset(path: Path, f: h5py.File, dataset: str, item_shape: tuple[int, ...],
                     dtype: np.dtype, what: str) -> h5py.Dataset:
    """The dataset ``dataset`` after checking, from metadata, it is (n, *item_shape) ``dtype``, n >= 1."""
    expected = _expectation(dataset, item_shape, dtype)
    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        found = _dataset_names(f)
        raise InputError(f"{path}: no {expected} ({what}); datasets found: {found if found else 'none'}")
    x = f[dataset]
    if x.dtype.kind != dtype.kind or x.dtype.itemsize != dtype.itemsize:
        raise InputError(f"{path}: dataset '{dataset}' has dtype {x.dtype}, expected {dtype} ({what})")
    if x.ndim != len(item_shape) + 1 or tuple(x.shape[1:]) != item_shape:
        raise InputError(f"{path}: dataset '{dataset}' has shape {x.shape}, expected "
                         f"(n, {', '.join(map(str, item_shape))}) ({what})")
    if x.shape[0] == 0:
        raise InputError(f"{path}: dataset '{dataset}' is empty (shape {x.shape}); expected at least one row ({what})")
    return x


def _contiguous_offset(x: h5py.Dataset) -> int | None:
    """File offset of a contiguous, unfiltered, allocated dataset stored in the file; else None."""
    if x.chunks is not None or x.external or x.is_virtual:  # filters need chunks
        return None
    return x.id.get_offset()  # None while the storage is not allocated (never written)


def open_image_array(path, dataset: str, item_shape, dtype, *, in_memory: bool = False,
                     what: str = "images"):
    """A validated, lazily indexable array of the (n, *item_shape) ``dtype`` rows of an HDF5 dataset.

    Contiguous and unfiltered: a read-only ``np.memmap`` at the dataset's file offset (zero
    copy, page-cache friendly). Chunked or compressed: an ``H5ImageRows``. ``in_memory``:
    an ``InMemoryImages`` read whole into RAM. All three index like numpy (an integer
    array gives an ``np.ndarray``) and carry ``identity`` (``content_identity``).

    The file must exist, be a readable (not truncated) HDF5 file and hold ``dataset`` with
    that item shape and dtype and at least one row; otherwise InputError names the file,
    the dataset and the expectation (``what`` says what the rows are).

    Worker processes: a forked child shares a memmap's pages; pickling a memmap copies all
    its data, so with the spawn start method send the path and reopen.
    """
    path, dtype = Path(path), np.dtype(dtype)
    item_shape = tuple(int(d) for d in item_shape)
    with open_hdf5(path, _expectation(dataset, item_shape, dtype)) as f:
        x = _checked_dataset(path, f, dataset, item_shape, dtype, what)
        shape, offset, file_dtype = tuple(x.shape), _contiguous_offset(x), x.dtype
        if in_memory:
            array = np.empty(shape, dtype=dtype)
            with Progress(shape[0], f"read {path.name}:{dataset}", unit="row") as progress:
                for lo in range(0, shape[0], BLOCK_ROWS):
                    hi = min(lo + BLOCK_ROWS, shape[0])
                    try:
                        x.read_direct(array, np.s_[lo:hi], np.s_[lo:hi])
                    except OSError as exc:  # a corrupt chunk
                        raise InputError(f"{path}: dataset '{dataset}' rows [{lo}, {hi}) are unreadable "
                                         f"({exc}); expected {what}") from None
                    progress.update(hi - lo)
            array = array.view(InMemoryImages)
    if not in_memory and offset is not None:
        end = offset + int(np.prod(shape)) * file_dtype.itemsize
        size = path.stat().st_size
        if size < end:
            raise InputError(f"{path}: truncated file of {size} bytes; dataset '{dataset}' needs bytes "
                             f"up to {end} ({what})")
        array = np.memmap(path, mode="r", dtype=file_dtype, shape=shape, offset=offset)
    elif not in_memory:
        array = H5ImageRows(path, dataset, shape, dtype)
    array.identity = content_identity(array)
    return array


# --------------------------------------------------------------------------- thesis readers
def openimages_split_path(directory, split: str) -> Path:
    """``{directory}/{split}.hdf5``, or InputError if ``split`` is not a bank split."""
    if split not in OPENIMAGES_SPLITS:
        raise InputError(f"{directory}: unknown OpenImages split '{split}', expected one of {list(OPENIMAGES_SPLITS)}")
    return Path(directory) / f"{split}.hdf5"


def _bank_what(split: str) -> str:
    return f"OpenImages bank split '{split}': HWC RGB images"


def read_openimages_bank(directory, split: str, *, in_memory: bool = False):
    """The images of one split of an OpenImages bank (docs/method.md section 2.2); row i is image id i.

    Reads ``{directory}/{split}.hdf5`` dataset ``images`` (n, 180, 180, 3) uint8 as it is,
    through ``open_image_array`` (memory-mapped when contiguous; ``in_memory`` loads it).
    """
    return open_image_array(openimages_split_path(directory, split), OPENIMAGES_DATASET,
                            OPENIMAGES_IMAGE_SHAPE, np.uint8, in_memory=in_memory, what=_bank_what(split))


def openimages_split_sizes(directory) -> dict[str, int]:
    """Split -> number of images (the bank size B of docs/method.md section 4), each file validated from metadata."""
    sizes = {}
    for split in OPENIMAGES_SPLITS:
        path = openimages_split_path(directory, split)
        with open_hdf5(path, _expectation(OPENIMAGES_DATASET, OPENIMAGES_IMAGE_SHAPE, np.dtype(np.uint8))) as f:
            x = _checked_dataset(path, f, OPENIMAGES_DATASET, OPENIMAGES_IMAGE_SHAPE, np.dtype(np.uint8),
                                 _bank_what(split))
            sizes[split] = int(x.shape[0])
    return sizes


def configured_split_sizes(bank: Mapping) -> dict[str, int] | None:
    """Images per split that a bank block of the configuration gives: the embedded bank's
    sizes, the thesis files' own (read from their metadata), or None for a folder of photos
    (only the prepared bank can tell)."""
    if bank["source"] == "scikit-image":
        return dict(EMBEDDED_SPLIT_SIZES)
    return openimages_split_sizes(bank["path"]) if bank["source"] == "hdf5" else None


def read_perlin(path, *, in_memory: bool = False):
    """The two Perlin noise arrays (docs/method.md section 3), ``(resolution1, resolution2)``, each (n, 180, 270) int8.

    Both datasets must be present, int8, of shape (n, 180, 270) with the same n >= 1;
    otherwise InputError names the file and the dataset. Values are not range-checked
    (that would read the whole file).
    """
    path = Path(path)
    fields = tuple(open_image_array(path, name, PERLIN_FIELD_SHAPE, np.int8, in_memory=in_memory,
                                    what=f"Perlin noise fields, {' and '.join(PERLIN_DATASETS)} of equal n")
                   for name in PERLIN_DATASETS)
    counts = [len(a) for a in fields]
    if counts[0] != counts[1]:
        raise InputError(f"{path}: dataset '{PERLIN_DATASETS[0]}' has {counts[0]} fields and "
                         f"'{PERLIN_DATASETS[1]}' has {counts[1]}; expected the same n in both")
    return fields


# --------------------------------------------------------------------------- writing split files
@dataclass
class _SplitContent:
    """What one split file holds: ``images`` (n, 180, 180, 3) uint8 (sliceable), per-row
    provenance datasets and file attributes."""

    images: object
    provenance: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)


def _write_split_file(tmp: Path, content: _SplitContent) -> None:
    """One split file: a contiguous ``images`` dataset and the provenance, without timestamps."""
    n = len(content.images)
    with h5py.File(tmp, "w", track_order=False) as f:
        x = f.create_dataset(OPENIMAGES_DATASET, shape=(n, *OPENIMAGES_IMAGE_SHAPE), dtype=np.uint8,
                             track_times=False)
        for lo in range(0, n, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, n)
            x[lo:hi] = content.images[lo:hi]
        for name, values in content.provenance.items():
            kind = h5py.string_dtype("utf-8") if values.dtype == object else values.dtype
            f.create_dataset(name, data=values, dtype=kind, track_times=False)
        for key, value in content.attrs.items():
            f.attrs[key] = value


def _write_split_files(out_dir: Path, contents: Mapping[str, _SplitContent]) -> None:
    """Write ``{out_dir}/{split}.hdf5`` for every split, all or nothing.

    Each file is written through ``atomic_path``; the renames happen together at the end.
    If anything fails, the temporaries are removed and so is any split file this call
    already renamed into place, so no mix of old and new files is left (a SIGKILL between
    two renames cannot be cleaned up).
    """
    paths = {split: out_dir / f"{split}.hdf5" for split in contents}
    written: dict[str, int] = {}  # split -> inode of its temporary, which the rename keeps
    try:
        with contextlib.ExitStack() as stack:
            for split, content in contents.items():
                tmp = stack.enter_context(atomic_path(paths[split]))
                _write_split_file(tmp, content)
                written[split] = tmp.stat().st_ino
    except BaseException:
        for split, inode in written.items():
            with contextlib.suppress(FileNotFoundError):
                if paths[split].stat().st_ino == inode:
                    paths[split].unlink()
        raise


def _strings(values) -> np.ndarray:
    return np.array(list(values), dtype=object)


# --------------------------------------------------------------------------- photo folder importer
def load_photo(path, size: int = 180) -> np.ndarray:
    """One photograph as a (size, size, 3) uint8 RGB square.

    EXIF orientation applied; converted to RGB (16-bit greyscale scaled to 8 bits, alpha
    dropped); resized so the shorter side is ``size`` with Pillow's antialiasing LANCZOS
    filter (not resized when it already is); centre-cropped, the crop starting at
    ``(longer - size) // 2``. Raises what Pillow raises for an unreadable file.
    """
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            sixteen = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
            image = Image.fromarray((sixteen >> 8).astype(np.uint8), "L")
        image = image.convert("RGB")
    width, height = image.size
    if min(width, height) != size:
        scale = size / min(width, height)
        image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                             Image.Resampling.LANCZOS)
        width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _checked_fractions(fractions: Mapping[str, object]) -> dict[str, float]:
    if not isinstance(fractions, Mapping) or set(fractions) != set(OPENIMAGES_SPLITS):
        raise InputError(f"fractions: expected a mapping of exactly {list(OPENIMAGES_SPLITS)} to "
                         f"positive shares summing to 1, got {fractions!r}")
    values = {}
    for split in OPENIMAGES_SPLITS:
        value = fractions[split]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
            raise InputError(f"fractions.{split}: expected a positive share, got {value!r}")
        values[split] = float(value)
    if abs(sum(values.values()) - 1.0) > 1e-6:
        raise InputError(f"fractions: shares {values} sum to {sum(values.values())}, expected 1")
    return values


def photo_split(relative_path: str, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> str:
    """The split of a photo: u = first 8 bytes of sha256(relative path, UTF-8) / 2**64 falls in
    the cumulative fractions in the order train, valid, test.

    A photo's split depends on its own relative path only, so adding or removing other
    photos never moves it (renaming or moving it within the folder may).
    """
    u = int.from_bytes(hashlib.sha256(relative_path.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    bound = 0.0
    for split in OPENIMAGES_SPLITS:
        bound += fractions[split]
        if u < bound:
            return split
    return OPENIMAGES_SPLITS[-1]  # u within rounding of 1


def find_photos(folder) -> list[str]:
    """Relative POSIX paths of the .jpg/.jpeg/.png files (any case) under ``folder``, sorted."""
    folder = Path(folder)
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file())


def import_photo_folder(folder, out_dir, *, fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                        size: int = 180) -> dict[str, int]:
    """Turn a folder of photographs into an OpenImages-format bank; return split -> images.

    Finds every .jpg/.jpeg/.png (case-insensitive) under ``folder`` recursively, sorted by
    relative path; each is made a ``size`` x ``size`` RGB square by ``load_photo`` and
    assigned to a split by ``photo_split`` (a hash of its relative path: stable when photos
    are added or removed). Unreadable files are skipped with a warning naming them. Within a
    split, rows follow the relative-path order. Writes ``{out_dir}/{train,valid,test}.hdf5``
    (``images`` (n, size, size, 3) uint8 contiguous; ``source_path`` (n,) the relative path
    of each row; attributes ``source``, ``crop``, ``fractions``) all-or-nothing, with
    identical bytes for identical inputs. The decoded squares are staged in a temporary
    file in ``out_dir`` (n x size x size x 3 bytes on disk), so memory stays bounded.

    InputError when ``folder`` is not a directory, holds no readable image, or a split would
    be empty. The files are read by ``read_openimages_bank`` only for ``size`` = 180.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    shares = _checked_fractions(fractions)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory (expected a folder of .jpg/.jpeg/.png photographs)")
    names = find_photos(folder)
    if not names:
        raise InputError(f"{folder}: no .jpg/.jpeg/.png files found; expected photographs to import")
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # removed again on failure
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".import-photos.*.npy.tmp"):  # left by a killed import (one writer at a time)
        stale.unlink(missing_ok=True)
    fd, staging_name = tempfile.mkstemp(prefix=".import-photos.", suffix=".npy.tmp", dir=out_dir)
    os.close(fd)
    staging_path = Path(staging_name)
    try:
        staging = np.lib.format.open_memmap(staging_path, mode="w+", dtype=np.uint8,
                                            shape=(len(names), size, size, 3))
        readable = np.zeros(len(names), dtype=bool)
        with Progress(len(names), f"import photos {folder.name}", unit="photo") as progress:
            for row, name in enumerate(names):
                try:
                    staging[row] = load_photo(folder / name, size)
                    readable[row] = True
                except (OSError, ValueError, SyntaxError, EOFError, struct.error,
                        Image.DecompressionBombError) as exc:  # what Pillow's decoders raise
                    logger.warning("%s: skipped, not a readable image (%s)", folder / name, exc)
                progress.update()
        if not readable.any():
            raise InputError(f"{folder}: none of the {len(names)} .jpg/.jpeg/.png files is a readable "
                             "image; expected at least one photograph per split")
        assigned = np.array([photo_split(name, shares) for name in names])
        contents = {}
        for split in OPENIMAGES_SPLITS:
            rows = np.flatnonzero(readable & (assigned == split))
            if rows.size == 0:
                raise InputError(f"{folder}: no readable photo falls in split '{split}' (fraction "
                                 f"{shares[split]} of {int(readable.sum())} readable photos); expected "
                                 "at least one per split: add photos or change the fractions")
            contents[split] = _SplitContent(
                images=_RowsOf(staging, rows),
                provenance={"source_path": _strings(names[r] for r in rows)},
                attrs={"source": f"photo folder {folder.name}",
                       "crop": f"shorter side resized to {size} (Pillow LANCZOS), centre crop {size}x{size}",
                       "fractions": json.dumps(shares)},
            )
        _write_split_files(out_dir, contents)
    except BaseException:
        staging_path.unlink(missing_ok=True)
        for directory in created:  # deepest first; only folders this call made, if left empty
            if directory.exists() and not any(directory.iterdir()):
                directory.rmdir()
        raise
    staging_path.unlink(missing_ok=True)
    counts = {split: len(content.images) for split, content in contents.items()}
    logger.info("%s: imported %s photos into %s (%d unreadable skipped)", folder, counts, out_dir,
                int((~readable).sum()))
    return counts


@dataclass
class _RowsOf:
    """The rows ``rows`` of ``array``, sliceable by position (a lazy selection)."""

    array: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice) -> np.ndarray:
        return self.array[self.rows[key]]


# --------------------------------------------------------------------------- embedded default bank
def embedded_photo_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image wheel, found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("embedded bank: the package scikit-image is not installed (expected skimage/data/)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def grid_crops(image: np.ndarray, size: int = 180) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``size`` x ``size`` crops of an (h, w, 3) image on a centred grid.

    The grid has ``h // size`` rows and ``w // size`` columns and leaves equal margins
    (the extra pixel, if any, at the bottom or right). Returns the crops (c, size, size, 3)
    in row-major grid order and their boxes (c, 4) int32 as (left, top, right, bottom).
    """
    height, width = image.shape[:2]
    ny, nx = height // size, width // size
    top, left = (height - ny * size) // 2, (width - nx * size) // 2
    grid = image[top:top + ny * size, left:left + nx * size]
    crops = grid.reshape(ny, size, nx, size, -1).transpose(0, 2, 1, 3, 4).reshape(ny * nx, size, size, -1)
    gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    x0, y0 = (left + gx * size).ravel(), (top + gy * size).ravel()
    boxes = np.stack([x0, y0, x0 + size, y0 + size], axis=1).astype(np.int32)
    return crops, boxes


def near_constant(crops: np.ndarray) -> np.ndarray:
    """Boolean mask of the crops that carry too little image to be a bank image.

    A crop is dropped when it is *flat*, more than ``FLAT_SHARE`` (1/2) of its pixels within
    ``FLAT_TOLERANCE`` (1) grey level in every channel of its median colour (the black
    corners of retina.jpg: 71% to 84%; every other crop of the embedded photos is at most
    36%), or *featureless*, the standard deviation of its values below ``MIN_STD`` (6 grey
    levels: the empty field of cell.png, 3.2 to 5.4; the next lowest is 7.2).
    """
    values = crops.reshape(len(crops), -1, crops.shape[-1]).astype(np.int16)
    median = np.median(values, axis=1, keepdims=True)
    flat_share = (np.abs(values - median) <= FLAT_TOLERANCE).all(axis=2).mean(axis=1)
    return (flat_share > FLAT_SHARE) | (values.std(axis=(1, 2)) < MIN_STD)


def prepare_embedded_bank(out_dir, *, splits: Mapping[str, int] = EMBEDDED_DEFAULT_SPLITS,
                          seed: int = 0) -> dict[str, int]:
    """Write the default OpenImages-format bank from photographs bundled with scikit-image.

    OpenImages cannot be downloaded here, so the default bank is cut from the distinct real
    photographs shipped inside the scikit-image wheel (``EMBEDDED_PHOTOS``, read directly
    from the installed ``skimage/data/`` folder with Pillow, never through skimage's
    download fetchers; no network). They are photographs of real scenes (the astronaut,
    the cameraman, the cat, the coffee cup, coins, a clock, a motorcycle, a rocket launch),
    of real surfaces (brick, grass, gravel, the moon) and through instruments (Hubble deep
    field, a retina fundus photograph, microscopy of a cell and of an IHC stained tissue):
    varied natural image statistics, as in OpenImages. Greyscale photographs are replicated
    to RGB. Left out: synthetic or drawn images (chessboard, phantom, horse silhouette,
    color chart, logo), text (page, text), images smaller than one crop
    (microaneurysms, the 25x25 lfw faces, the tiny tif/gif test files), and
    motorcycle_right.png, the stereo twin of motorcycle_left.png, whose crops would be
    near-duplicates of other image ids.

    Each photo is cut into non-overlapping 180x180 crops on a centred grid (``grid_crops``);
    near-constant crops (``near_constant``) and exact duplicates are dropped. The crops, in
    the order of ``EMBEDDED_PHOTOS`` then grid order, are split by one keyed permutation
    (``KeyedRandom(seed, "all", "embedded_bank").at(0)``): its first ``splits["valid"]``
    entries are the valid split, the next ``splits["test"]`` the test split and the rest
    train, so every split mixes crops of many photos; rows within a split keep the crop
    order. Crops of one photo may land in different splits (distinct pixels, the same scene).

    With scikit-image 0.26: 132 grid crops, 4 flat (retina corners) and 5 featureless
    (cell.png) dropped, 123 kept: train 83, valid 20, test 20. Writes
    ``{out_dir}/{train,valid,test}.hdf5`` (``images``; provenance ``source_file`` (n,)
    and ``crop_box`` (n, 4) int32 (left, top, right, bottom)) all-or-nothing; reruns give
    identical bytes (the JPEG sources decode through Pillow's libjpeg, so another Pillow
    build may differ in a few pixel values). Returns split -> number of images.
    """
    out_dir = Path(out_dir)
    if (not isinstance(splits, Mapping) or set(splits) != {"valid", "test"}
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in splits.values())):
        raise InputError(f"splits: expected positive integer sizes for exactly 'valid' and 'test' "
                         f"(train takes the rest), got {splits!r}")
    directory = embedded_photo_dir()
    size = OPENIMAGES_IMAGE_SHAPE[0]
    crops, sources, boxes, seen = [], [], [], set()
    dropped = {"near_constant": 0, "duplicate": 0}
    with Progress(len(EMBEDDED_PHOTOS), "embedded bank photos", unit="photo") as progress:
        for name in EMBEDDED_PHOTOS:
            path = directory / name
            if not path.is_file():
                raise InputError(f"{path}: file not found (expected the photograph bundled with scikit-image)")
            with Image.open(path) as opened:
                image = np.asarray(opened.convert("RGB"), dtype=np.uint8)
            photo_crops, photo_boxes = grid_crops(image, size)
            drop = near_constant(photo_crops)
            dropped["near_constant"] += int(drop.sum())
            for crop, box in zip(photo_crops[~drop], photo_boxes[~drop]):
                digest = hashlib.sha256(crop.tobytes()).digest()
                if digest in seen:
                    dropped["duplicate"] += 1
                    continue
                seen.add(digest)
                crops.append(crop)
                sources.append(name)
                boxes.append(box)
            progress.update()
    n, n_valid, n_test = len(crops), int(splits["valid"]), int(splits["test"])
    if n_valid + n_test >= n:
        raise InputError(f"splits: valid {n_valid} + test {n_test} leaves no train image of the {n} "
                         "embedded crops; expected a smaller valid and test")
    order = KeyedRandom(seed, "all", "embedded_bank").at(0).permutation(n)
    members = {"valid": np.sort(order[:n_valid]), "test": np.sort(order[n_valid:n_valid + n_test]),
               "train": np.sort(order[n_valid + n_test:])}
    images, boxes = np.stack(crops), np.stack(boxes)
    version = importlib.metadata.version("scikit-image")
    contents = {
        split: _SplitContent(
            images=images[members[split]],
            provenance={"source_file": _strings(sources[i] for i in members[split]),
                        "crop_box": boxes[members[split]]},
            attrs={"source": f"photographs bundled with scikit-image {version} (skimage/data)",
                   "crop": f"non-overlapping {size}x{size} crops on a centred grid; near-constant and "
                           "duplicate crops dropped; crop_box is (left, top, right, bottom)",
                   "split": f"keyed permutation, seed {seed}"},
        )
        for split in OPENIMAGES_SPLITS
    }
    _write_split_files(out_dir, contents)
    counts = {split: len(members[split]) for split in OPENIMAGES_SPLITS}
    logger.info("embedded bank: %d crops of %d photographs (%s dropped): %s", n, len(EMBEDDED_PHOTOS),
                dropped, counts)
    return counts


def prepare_openimages_bank(out_dir, *, source: str = "scikit-image", path=None, fractions=None) -> dict[str, int]:
    """Write the split files ``{out_dir}/{train,valid,test}.hdf5``; return the split sizes.

    ``source``: ``scikit-image`` (crops of the photographs embedded in scikit-image, the
    default bank) or ``photos`` (``path``: a folder of JPEG/PNG photos, split by
    ``fractions``). The thesis files (source ``hdf5``) need no preparation: they are read
    where they are.
    """
    if source == "scikit-image":
        prepare_embedded_bank(out_dir)
    elif source == "photos":
        if not path:
            raise InputError("bank.path: source photos needs the folder of photographs")
        import_photo_folder(path, out_dir, **({"fractions": fractions} if fractions else {}))
    else:
        raise InputError(f"bank.source: {source!r} is not a source to prepare an OpenImages bank from, "
                         "expected scikit-image or photos")
    return openimages_split_sizes(out_dir)
