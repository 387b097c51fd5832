"""Artifact schemas (docs/artifacts.md), atomic writes and validated readers.

Every artifact is written to a temporary name in its own directory and renamed
when complete, so an interrupted job never leaves a file that looks finished. The
temporary's name says who writes it (host name and process id), so several writers can
share a results folder (a CLI run beside a Snakemake run, two Snakemake runs with one
``results``): each keeps its own temporaries, the last rename wins, and nothing a live
writer holds is removed. A job killed outright (SIGKILL) cannot remove its temporary; the
next write of the same artifact on the same host does, once that process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from equihash.fault_injection import fault_point


class InputError(ValueError):
    """Bad input: the message names the file (or config key), the field and the expectation."""


# --------------------------------------------------------------------------- atomic writes
# A temporary of ``path`` is ``.{name}.{host}-{pid}-{XXXXXXXX}.tmp`` beside it (XXXXXXXX from
# tempfile), or a temporary of such a temporary (a writer that writes its temporary
# atomically): ``..{name}.{writer}.tmp.{writer}.tmp``.
_WRITER = r"(?:[A-Za-z0-9-]+-[0-9]+-[a-z0-9_]{8})"
_LAST_WRITER = re.compile(r"\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>[0-9]+)-[a-z0-9_]{8}\.tmp\Z")  # who made it


def _host() -> str:
    """This machine's host name in the characters a temporary's name allows."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"


def _writer_alive(host: str, pid: int) -> bool:
    """Whether the writer of a temporary may still be running: True for another host (it
    cannot be asked) and for a live process of this one (or a reused process id)."""
    if host != _host():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def stale_temporaries(path) -> list[Path]:
    """Temporaries of ``path`` left by writers that are gone: those whose name holds this
    host and the id of a process that no longer runs (a killed writer's). Temporaries of
    running writers, and of writers on other hosts, are not listed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.+{re.escape(path.name)}(\.{_WRITER}\.tmp)+")
    stale = []
    with os.scandir(path.parent) as entries:
        for entry in entries:
            if entry.name.endswith(".tmp") and pattern.fullmatch(entry.name):
                writer = _LAST_WRITER.search(entry.name)
                if not _writer_alive(writer["host"], int(writer["pid"])):
                    stale.append(Path(entry.path))
    return sorted(stale)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path, *, directory=False):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception the temporary file or directory is removed and nothing is left at
    ``path``. Parent directories are created. The temporary is this process's own
    (``.{name}.{host}-{pid}-XXXXXXXX.tmp``): writers of the same artifact at once each
    write their own and the last to finish is the artifact (a directory is replaced as
    a whole, even when two commit at once); on entry only the temporaries of writers
    gone from this host are removed (:func:`stale_temporaries`).
    The rename is a fault point
    (``equihash.fault_injection``). The artifact gets the permissions a plain
    ``open`` would give it (0666, or 0777 for a directory, less the umask), not the
    owner-only mode of a temporary file, so collaborators of a shared results folder
    can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temporaries(path):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    tmp = _own_temporary(path, directory=directory)
    try:
        yield tmp
        if tmp.exists():
            tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~_UMASK)
        fault_point(f"commit {path}")
        if directory and tmp.is_dir():
            _replace_directory(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _own_temporary(path: Path, *, directory: bool = False) -> Path:
    """A new, empty temporary file or directory of ``path``, named for this process."""
    prefix = f".{path.name}.{_host()}-{os.getpid()}-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def _replace_directory(tmp: Path, path: Path) -> None:
    """Rename directory ``tmp`` to ``path``, replacing the directory there. A directory
    cannot be renamed over a non-empty one, so the old one is first renamed aside (to a
    temporary of this process, removed after); when another writer commits in between,
    its directory is moved aside in turn and the rename retried, so every commit succeeds
    and ``path`` is always one writer's whole directory."""
    while True:
        try:
            os.rename(tmp, path)  # succeeds onto a missing or empty directory
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        aside = _own_temporary(path, directory=True)
        try:
            os.rename(path, aside)  # onto the empty ``aside``
        except FileNotFoundError:  # another writer moved it first
            pass
        shutil.rmtree(aside, ignore_errors=True)


def open_hdf5(path, expected: str):
    """An HDF5 file opened read-only; InputError naming the file and ``expected`` (what it
    should hold) if it is missing, not a file, not HDF5 or truncated."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found (expected an HDF5 file with {expected})")
    if not path.is_file():
        raise InputError(f"{path}: not a file (expected an HDF5 file with {expected})")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        kind = "truncated HDF5 file" if "truncated" in str(exc) else "not a readable HDF5 file"
        raise InputError(f"{path}: {kind} ({exc}); expected an HDF5 file with {expected}") from None


def write_table(table: pa.Table, path, *, row_group_size: int = 1 << 20) -> None:
    """Write a Parquet file atomically (deterministic bytes for identical tables)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


# --------------------------------------------------------------------------- schemas
def labels_type(m: int) -> pa.DataType:
    return pa.list_(pa.uint32(), m)


def code_type(nbytes: int) -> pa.DataType:
    return pa.binary(nbytes)


def labels_array(labels: np.ndarray) -> pa.FixedSizeListArray:
    """(n, m) uint32 -> fixed_size_list<uint32>[m]."""
    labels = np.ascontiguousarray(labels, dtype=np.uint32)
    return pa.FixedSizeListArray.from_arrays(pa.array(labels.reshape(-1)), labels.shape[1])


def codes_array(codes: np.ndarray) -> pa.FixedSizeBinaryArray:
    """(n, B) uint8 -> fixed_size_binary[B] without a copy per row."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, nbytes = codes.shape
    return pa.FixedSizeBinaryArray.from_buffers(
        code_type(nbytes), n, [None, pa.py_buffer(codes.reshape(-1))]
    )


def logits_array(logits: np.ndarray) -> pa.FixedSizeListArray:
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), logits.shape[1])


#: Schema metadata of a fingerprint file: the encoder settings its fingerprints depend on besides
#: the model, the bank and the keys of its instances (encode.precision, encode.forward_batch).
ENCODING_KEYS = {"precision": b"equihash.precision", "forward_batch": b"equihash.forward_batch"}


def _with_encoding(schema: pa.Schema, encoding: dict | None) -> pa.Schema:
    if not encoding:
        return schema
    return schema.with_metadata({ENCODING_KEYS[name]: str(value).encode() for name, value in encoding.items()})


def fingerprint_schema(nbytes: int, encoding: dict | None = None) -> pa.Schema:
    """`id`, `code`; ``encoding``: the encoder's settings, kept in the schema metadata
    (:data:`ENCODING_KEYS`)."""
    return _with_encoding(pa.schema([("id", pa.uint64()), ("code", code_type(nbytes))]), encoding)


def query_schema(nbytes: int, encoding: dict | None = None) -> pa.Schema:
    return _with_encoding(pa.schema(
        [("id", pa.uint64()), ("code", code_type(nbytes)), ("logits", pa.list_(pa.float32(), 8 * nbytes))]
    ), encoding)


def fingerprint_encoding(path) -> dict:
    """The encoder settings a fingerprint file records: ``precision`` (fp32 | bf16) and
    ``forward_batch`` (int), each only if the file has it (older files lack the forward batch)."""
    metadata = pq.read_schema(path).metadata or {}
    found = {name: metadata[key].decode() for name, key in ENCODING_KEYS.items() if key in metadata}
    if "forward_batch" in found:
        found["forward_batch"] = int(found["forward_batch"])
    return found


def triplet_schema(nbytes: int) -> pa.Schema:
    return pa.schema([(name, code_type(nbytes)) for name in ("anchor", "positive", "negative")])


def labels_schema(m: int) -> pa.Schema:
    return pa.schema([("labels", labels_type(m))])


def positive_labels_schema(m: int) -> pa.Schema:
    return pa.schema([("labels", labels_type(m)), ("ground_truth", pa.list_(pa.uint64()))])


def negative_pairs_schema(m: int) -> pa.Schema:
    return pa.schema([("anchor", labels_type(m)), ("negative", labels_type(m))])


def partition_counts_schema() -> pa.Schema:
    """What one index partition contributes to a run's figures (equihash.evaluate.run): one
    row per number of lookups, one count per query in each list."""
    return pa.schema([("lookups", pa.uint32()), ("positive_retrieved", pa.list_(pa.uint64())),
                      ("positive_common", pa.list_(pa.uint64())), ("negative_retrieved", pa.list_(pa.uint64()))])


#: Every Parquet artifact with a fixed schema: its path under ``results`` (docs/artifacts.md)
#: -> its schema for m cells per mosaic and B bytes per code.
PARQUET_ARTIFACTS = {
    "labels/{task}/{db}/database.parquet": lambda m, nbytes: labels_schema(m),
    "labels/{task}/{db}/positive_queries.parquet": lambda m, nbytes: positive_labels_schema(m),
    "labels/{task}/{db}/negative_queries.parquet": lambda m, nbytes: labels_schema(m),
    "labels/{task}/{db}/negative_pairs.parquet": lambda m, nbytes: negative_pairs_schema(m),
    "fingerprints/{task}/{model}/{variant}/{db}/shards/{i}-of-{n}.parquet": lambda m, nbytes: fingerprint_schema(nbytes),
    "fingerprints/{task}/{model}/{variant}/{db}/database.parquet": lambda m, nbytes: fingerprint_schema(nbytes),
    "fingerprints/{task}/{model}/{variant}/{db}/positive_queries.parquet": lambda m, nbytes: query_schema(nbytes),
    "fingerprints/{task}/{model}/{variant}/{db}/negative_queries.parquet": lambda m, nbytes: query_schema(nbytes),
    "fingerprints/{task}/{model}/{variant}/{db}/triplets.parquet": lambda m, nbytes: triplet_schema(nbytes),
    "metrics/{task}/{model}/{variant}/{db}/partitions/{v}-of-{P}.parquet": lambda m, nbytes: partition_counts_schema(),
}


# --------------------------------------------------------------------------- readers
def column_to_numpy(column: pa.ChunkedArray | pa.Array, *, path="?", name="?") -> np.ndarray:
    """A fixed-size list or fixed-size binary column -> 2-D numpy array; a flat column -> 1-D."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = column.type
    if pa.types.is_fixed_size_list(kind):
        if column.null_count:
            raise InputError(f"{path}: column '{name}' has null rows; expected none")
        width = kind.list_size
        values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), width)
        if values.dtype.kind == "f" and not np.isfinite(values).all():  # logits: NaN or inf is never valid
            row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise InputError(f"{path}: column '{name}' row {row} holds NaN or infinity; expected finite values")
        return values
    if pa.types.is_fixed_size_binary(kind):
        width = kind.byte_width
        buf = column.buffers()[1]
        data = np.frombuffer(buf, dtype=np.uint8, count=(column.offset + len(column)) * width)
        return data[column.offset * width:].reshape(len(column), width)
    return column.to_numpy(zero_copy_only=False)


def read_schema(path) -> pa.Schema:
    """The Arrow schema of a Parquet file, or InputError when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        return pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None


def check_schema(path, expected: dict[str, pa.DataType]) -> None:
    """Check that a Parquet file exists and has each named column with its type."""
    schema = read_schema(path)
    for name, kind in expected.items():
        if name not in schema.names:
            raise InputError(f"{path}: missing column '{name}' (expected {kind})")
        if schema.field(name).type != kind:
            raise InputError(
                f"{path}: column '{name}' has type {schema.field(name).type}, expected {kind}"
            )


def read_columns(path, expected: dict[str, pa.DataType]) -> dict[str, np.ndarray]:
    """Read the named fixed-width columns of a Parquet file as numpy arrays, checking their types."""
    check_schema(path, expected)
    table = pq.read_table(path, columns=list(expected))
    return {name: column_to_numpy(table[name], path=path, name=name) for name in expected}


def read_labels(path, m: int | None = None, column: str = "labels") -> np.ndarray:
    """Read a labels column as (n, m) uint32."""
    path = Path(path)
    if m is None:
        kind = pq.read_schema(path).field(column).type if path.exists() else None
        m = kind.list_size if kind is not None and pa.types.is_fixed_size_list(kind) else 0
        if not m:
            raise InputError(f"{path}: column '{column}' must be fixed_size_list<uint32>")
    return read_columns(path, {column: labels_type(m)})[column]


def _labels_column_type(reader: pq.ParquetFile, path, column: str) -> pa.DataType:
    """The type of a labels column of an open Parquet file, checked: fixed_size_list<uint32>."""
    kind = reader.schema_arrow.field(column).type if column in reader.schema_arrow.names else None
    if kind is None or not pa.types.is_fixed_size_list(kind) or kind.value_type != pa.uint32():
        raise InputError(f"{path}: column '{column}' must be fixed_size_list<uint32>, got {kind}")
    return kind


def read_label_rows(path, start: int, stop: int, column: str = "labels") -> np.ndarray:
    """Rows [start, stop) of a labels column, reading only the row groups that hold them."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    reader = pq.ParquetFile(path)
    kind = _labels_column_type(reader, path, column)
    n = reader.metadata.num_rows
    if not 0 <= start <= stop <= n:
        raise InputError(f"{path}: rows [{start}, {stop}) requested, the file has {n} rows")
    groups, first, row = [], None, 0
    for g in range(reader.num_row_groups):
        size = reader.metadata.row_group(g).num_rows
        if row + size > start and row < stop:
            groups.append(g)
            first = row if first is None else first
        row += size
    if not groups:
        return np.empty((0, kind.list_size), dtype=np.uint32)
    table = reader.read_row_groups(groups, columns=[column])
    values = column_to_numpy(table[column], path=path, name=column)
    return values[start - first:stop - first]


def gather_label_rows(path, positions, column: str = "labels", batch_rows: int = 1 << 16) -> np.ndarray:
    """The label rows at ``positions`` (any order, repeats allowed) as (len(positions), m)
    uint32, streaming only the row groups that hold one of them, ``batch_rows`` rows at a
    time: memory is the output and one batch, whatever the file's size."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    positions = np.asarray(positions, dtype=np.int64)
    with pq.ParquetFile(path, pre_buffer=False) as reader:
        kind = _labels_column_type(reader, path, column)
        n = reader.metadata.num_rows
        out = np.empty((positions.size, kind.list_size), dtype=np.uint32)
        if positions.size and (int(positions.min()) < 0 or int(positions.max()) >= n):
            raise InputError(f"{path}: rows up to {int(positions.max())} requested, the file has {n} rows")
        order = np.argsort(positions, kind="stable")
        wanted = positions[order]
        starts = np.cumsum([0] + [reader.metadata.row_group(g).num_rows for g in range(reader.num_row_groups)])
        groups = np.unique(np.searchsorted(starts, wanted, side="right") - 1).tolist()
        for g in groups:  # iter_batches over several groups would read the rows in between
            first = int(starts[g])
            for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[g], columns=[column]):
                rows = column_to_numpy(batch.column(column), path=path, name=column)
                lo, hi = np.searchsorted(wanted, [first, first + len(rows)])
                out[order[lo:hi]] = rows[wanted[lo:hi] - first]
                first += len(rows)
    return out


def read_ground_truth(path) -> tuple[np.ndarray, np.ndarray]:
    """The ``ground_truth`` column of a positive-queries file as CSR (offsets int64, positions uint64)."""
    check_schema(path, {"ground_truth": pa.list_(pa.uint64())})
    column = pq.read_table(path, columns=["ground_truth"])["ground_truth"].combine_chunks()
    offsets = column.offsets.to_numpy().astype(np.int64)
    positions = column.values.to_numpy()[offsets[0]:offsets[-1]]
    return offsets - offsets[0], positions
