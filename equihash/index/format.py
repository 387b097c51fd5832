"""The on-disk formats of the indexes: writing, reading and verifying them.

Saved and opened with :func:`write_index` and :func:`read_index`, for an
:class:`~equihash.index.inverted.InvertedIndex` or a
:class:`~equihash.index.partitioned.PartitionedIndex` alike (faiss's ``write_index`` /
``read_index``): ``read_index`` tells the two apart by the file the directory holds.

On-disk format (a directory, version 3)
---------------------------------------
``header.json``: {"format": "equihash-inverted-index", "version": 3, "nbytes": B,
"size": N, "database_size": D (positions are < D; D = N for a whole index),
"n_unique": U, "key": "splitmix64-le64-words", "directory_bits": b, "prefix_bits": p,
"prefix": v, "index_dtype": "uint32" or "uint64", "arrays": {name: {"file", "dtype",
"shape", "crc32"}}}. Each array is a raw little-endian file ``<name>.bin`` with exactly
``prod(shape) * itemsize`` bytes (no numpy header, so the bounded-memory build can
append to it): ``np.memmap(path, dtype, mode="r", shape=shape)`` reads it; ``crc32`` is
the CRC-32 (``zlib.crc32``) of the file's bytes, computed from the written files before
the header is written. The directory is written under a temporary name and renamed
when complete. Version 2 (no checksums) is refused: rebuild the index.

:func:`read_index` checks the header, then every file's size against its dtype and shape (a
truncated or padded file is an error naming it and the expected size), then, unless
``verify=False``, every file's CRC-32 against the header, then the end values of
``offsets`` and ``directory``, and memory-maps the arrays. The checksums catch any
changed byte: CRC-32 detects every error burst of up to 32 bits (so every changed byte)
and misses a random larger change with probability 2**-32. It guards against damage
(a bad disk, a torn copy, a stray write), not against a forger. Verifying reads every
file once (the files in parallel on the index's threads): ``benchmarks/index_load.py``
measured 2.6 GB/s on one thread of a 2-core Xeon with the files in the page cache, so a
1e9-code index (13 GB) verifies in about 5 s, or at the disk's read rate when it is not
cached; the read leaves the arrays in the page cache for the lookups that follow.
``verify=False`` skips that read (a single query on a large index): the lookups then
still never read outside an array (``_core`` checks every directory and posting-list
range it follows, and a looked-up position must be below D), so a damaged index raises
InputError naming the file or, where the damage keeps every range valid, answers wrongly.

Partitioned index (a directory, version 2): ``partitions.json`` =
{"format": "equihash-partitioned-index", "version": 2, "prefix_bits": p, "nbytes": B,
"database_size": N, "partitions": ["0-of-P", ..., "<P - 1>-of-P"]} with P = 2**p, and
one index directory of the format above per partition, named in that list (version 1
named them ``part-<v>``). With p = 0 its one partition is the whole index: the pipeline
writes every index in this layout, one job per partition.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from equihash.io import InputError, atomic_path

from .inverted import (MAX_PREFIX_BITS, InvertedIndex, default_threads, directory_bits_for, run_parallel)
from .partitioned import PartitionedIndex

FORMAT_NAME = "equihash-inverted-index"
FORMAT_VERSION = 3
KEY_NAME = "splitmix64-le64-words"
HEADER_FILE = "header.json"
INDEX_DTYPES = ("uint32", "uint64")
CHECKSUM_BLOCK = 1 << 23  # bytes read at a time when checksumming an array file

PARTITIONED_FORMAT_NAME = "equihash-partitioned-index"
PARTITIONED_FORMAT_VERSION = 2
MANIFEST_FILE = "partitions.json"


def little(dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("<")


def file_crc32(path) -> int:
    """CRC-32 (``zlib.crc32``) of a file's bytes, read in blocks (the GIL is released while
    a block is read and checksummed, so threads checksum files in parallel)."""
    crc = 0
    buffer = bytearray(CHECKSUM_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            crc = zlib.crc32(view[:read], crc)
    return crc


def seal(directory: Path, header: dict, threads: int) -> None:
    """Record the CRC-32 of every array file of ``directory`` in ``header`` and write
    ``header.json``, last: an index directory is complete once its header exists."""
    names = list(header["arrays"])
    checksums = run_parallel(file_crc32, [(directory / header["arrays"][name]["file"],) for name in names], threads)
    for name, crc in zip(names, checksums):
        header["arrays"][name]["crc32"] = crc
    (directory / HEADER_FILE).write_text(json.dumps(header, indent=2) + "\n")



def header_for(*, nbytes, size, database_size, n_unique, directory_bits, prefix_bits, prefix, index_dtype) -> dict:
    index_dtype = np.dtype(index_dtype)
    idx = little(index_dtype).str
    arrays = {
        "keys": ("<u8", [n_unique]),
        "offsets": (idx, [n_unique + 1]),
        "positions": (idx, [size]),
        "directory": (idx, [2**directory_bits + 1]),
    }
    if nbytes > 8:
        arrays["fingerprints"] = ("|u1", [n_unique, nbytes])
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "nbytes": int(nbytes),
        "size": int(size),
        "database_size": int(database_size),
        "n_unique": int(n_unique),
        "key": KEY_NAME,
        "directory_bits": int(directory_bits),
        "prefix_bits": int(prefix_bits),
        "prefix": int(prefix),
        "index_dtype": index_dtype.name,
        "arrays": {name: {"file": f"{name}.bin", "dtype": dtype, "shape": shape}
                   for name, (dtype, shape) in arrays.items()},
    }


def read_header(path: Path) -> dict:
    """Read and validate ``header.json``: every field, and the array list it implies."""
    if not path.is_file():
        raise InputError(f"{path}: index header not found (expected an index directory written by write_index: "
                         f"{HEADER_FILE}, or {MANIFEST_FILE} for a partitioned index)")
    try:
        header = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(header).__name__}")
    if header.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: field 'format' is {header.get('format')!r}, expected {FORMAT_NAME!r}")
    if header.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: field 'version' is {header.get('version')!r}, expected {FORMAT_VERSION} "
                         "(rebuild the index with this version of equihash)")
    if header.get("key") != KEY_NAME:
        raise InputError(f"{path}: field 'key' is {header.get('key')!r}, expected {KEY_NAME!r}")
    for field in ("nbytes", "size", "database_size", "n_unique", "directory_bits", "prefix_bits", "prefix"):
        value = header.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"{path}: field '{field}' is {value!r}, expected a non-negative integer")
    if header["nbytes"] < 1:
        raise InputError(f"{path}: field 'nbytes' is {header['nbytes']}, expected >= 1")
    if header["n_unique"] > header["size"] or header["size"] > header["database_size"]:
        raise InputError(f"{path}: expected n_unique <= size <= database_size, got {header['n_unique']}, "
                         f"{header['size']}, {header['database_size']}")
    if header["n_unique"] == 0 and header["size"] > 0:
        raise InputError(f"{path}: field 'n_unique' is 0 but size is {header['size']}, expected >= 1")
    if header["directory_bits"] != directory_bits_for(header["n_unique"]):
        raise InputError(f"{path}: field 'directory_bits' is {header['directory_bits']}, expected "
                         f"{directory_bits_for(header['n_unique'])} for n_unique = {header['n_unique']}")
    if header["prefix_bits"] > MAX_PREFIX_BITS or header["prefix"] >= 2**header["prefix_bits"]:
        raise InputError(f"{path}: fields 'prefix_bits', 'prefix' are {header['prefix_bits']}, {header['prefix']}, "
                         f"expected prefix_bits <= {MAX_PREFIX_BITS} and prefix < 2**prefix_bits")
    allowed = INDEX_DTYPES if header["database_size"] < 2**32 else INDEX_DTYPES[1:]
    if header.get("index_dtype") not in allowed:
        raise InputError(f"{path}: field 'index_dtype' is {header.get('index_dtype')!r}, expected one of "
                         f"{allowed} for database_size = {header['database_size']}")
    expected = header_for(**{name: header[name] for name in (
        "nbytes", "size", "database_size", "n_unique", "directory_bits", "prefix_bits", "prefix", "index_dtype")})
    arrays = header.get("arrays")
    if not isinstance(arrays, dict) or not all(isinstance(spec, dict) for spec in arrays.values()):
        raise InputError(f"{path}: field 'arrays' is {arrays!r}, expected {expected['arrays']!r} with a 'crc32' each")
    for name, spec in arrays.items():
        crc = spec.get("crc32")
        if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc < 2**32:
            raise InputError(f"{path}: field 'arrays.{name}.crc32' is {crc!r}, expected the CRC-32 of "
                             f"{spec.get('file')!r}, an integer in [0, 2**32)")
    if {name: {k: v for k, v in spec.items() if k != "crc32"} for name, spec in arrays.items()} != expected["arrays"]:
        raise InputError(f"{path}: field 'arrays' is {arrays!r}, expected {expected['arrays']!r} with a 'crc32' each")
    return header


def index_header(index: InvertedIndex) -> dict:
    """The header of ``index`` in the on-disk format, without the checksums of its files."""
    return header_for(nbytes=index.nbytes, size=index.size, database_size=index.database_size,
                   n_unique=index.n_unique, directory_bits=index.directory_bits,
                   prefix_bits=index.prefix_bits, prefix=index.prefix, index_dtype=index.positions.dtype)


def partition_names(prefix_bits: int) -> list[str]:
    """The directory names of the 2**prefix_bits partitions of a partitioned index: ``v-of-P``."""
    return [partition_name(v, 2**prefix_bits) for v in range(2**prefix_bits)]


def partition_name(prefix: int, partitions: int) -> str:
    """The directory name of partition ``prefix`` of ``partitions``."""
    return f"{prefix}-of-{partitions}"


def write_manifest(directory: Path, prefix_bits: int, nbytes: int, database_size: int, *,
                   name: str = MANIFEST_FILE) -> None:
    manifest = {"format": PARTITIONED_FORMAT_NAME, "version": PARTITIONED_FORMAT_VERSION, "prefix_bits": prefix_bits,
                "nbytes": nbytes, "database_size": database_size, "partitions": partition_names(prefix_bits)}
    (directory / name).write_text(json.dumps(manifest, indent=2) + "\n")


def join_partitions(directory, prefix_bits: int) -> None:
    """Write the manifest of the partitions that separate jobs built into ``directory``
    (``build_index_from_parquet`` with ``prefix_bits`` and prefix v into
    ``directory/v-of-P``), after checking that they are the partitions of one database:
    :func:`read_index` then opens ``directory`` as one index. Written atomically; a
    partition missing or of another database is an InputError naming its header."""
    directory = Path(directory)
    headers = [read_header(directory / name / HEADER_FILE) for name in partition_names(prefix_bits)]
    path = directory / MANIFEST_FILE
    with atomic_path(path) as tmp:
        write_manifest(tmp.parent, prefix_bits, headers[0]["nbytes"], headers[0]["database_size"], name=tmp.name)
        _read_partitioned(directory, mmap=True, verify=False, threads=1, manifest_path=tmp)  # checks them all


# ----------------------------------------------------------------------------- writing
def write_index(index: InvertedIndex | PartitionedIndex, directory) -> None:
    """Write an index directory atomically: for an :class:`InvertedIndex` header.json (with
    the arrays' checksums) and one raw .bin file per array; for a :class:`PartitionedIndex`
    the manifest and one such directory per partition."""
    with atomic_path(directory, directory=True) as tmp:
        if isinstance(index, PartitionedIndex):
            for part, name in zip(index.partitions, partition_names(index.prefix_bits)):
                _write_arrays(part, tmp / name)
            write_manifest(tmp, index.prefix_bits, index.nbytes, index.database_size)
        else:
            _write_arrays(index, tmp)


def _write_arrays(index: InvertedIndex, directory: Path) -> None:
    directory.mkdir(exist_ok=True)
    header = index_header(index)
    for name, array in index.arrays().items():
        spec = header["arrays"][name]
        np.ascontiguousarray(array, dtype=np.dtype(spec["dtype"])).tofile(directory / spec["file"])
    seal(directory, header, index.threads)


# ----------------------------------------------------------------------------- reading
def read_index(directory, *, mmap: bool = True, verify: bool = True,
               threads: int | None = None) -> InvertedIndex | PartitionedIndex:
    """Open a saved index, whole or partitioned; with ``mmap`` the arrays are memory-mapped
    read-only.

    Raises InputError, naming the file and the expectation, when the header (or manifest)
    is missing, malformed or of another version, or when an array file is missing,
    truncated, inconsistent with the header or (``verify``, the default) has another
    CRC-32 than the header records; for a partitioned index also when a partition is
    built for another prefix, code width or database. ``verify=False`` skips reading the
    files whole; lookups then stay safe but may answer wrongly from a damaged file
    (module docstring).
    """
    directory = Path(directory)
    if (directory / MANIFEST_FILE).is_file() and not (directory / HEADER_FILE).exists():
        return _read_partitioned(directory, mmap=mmap, verify=verify, threads=threads)
    return _read_arrays(directory, mmap=mmap, verify=verify, threads=threads)


def _read_arrays(directory: Path, *, mmap: bool, verify: bool, threads: int | None) -> InvertedIndex:
    header_path = directory / HEADER_FILE
    header = read_header(header_path)
    threads = default_threads() if threads is None else max(1, int(threads))
    paths = {name: directory / spec["file"] for name, spec in header["arrays"].items()}
    for name, spec in header["arrays"].items():
        path = directory / spec["file"]
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        want = f"{dtype.name} array of shape {shape}, {expected} bytes"
        if not path.is_file():
            raise InputError(f"{path}: index array '{name}' not found (expected {want})")
        found = path.stat().st_size
        if found != expected:
            problem = "truncated" if found < expected else "too long"
            raise InputError(f"{path}: {problem} index array '{name}': {found} bytes, expected {want} "
                             f"(as {header_path.name} says)")
    if verify:
        found = run_parallel(file_crc32, [(path,) for path in paths.values()], threads)
        for (name, path), crc in zip(paths.items(), found):
            if crc != header["arrays"][name]["crc32"]:
                raise InputError(f"{path}: damaged index array '{name}': its CRC-32 is {crc:08x}, "
                                 f"{header_path.name} records {header['arrays'][name]['crc32']:08x}")
    arrays = {}
    for name, spec in header["arrays"].items():
        path, dtype, shape = paths[name], np.dtype(spec["dtype"]), tuple(spec["shape"])
        if int(np.prod(shape, dtype=np.int64)) == 0:
            arrays[name] = np.empty(shape, dtype=dtype)
        elif mmap:
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape)
        else:
            arrays[name] = np.fromfile(path, dtype=dtype).reshape(shape)
    for name in ("offsets", "directory"):
        values = arrays[name]
        end = header["size"] if name == "offsets" else header["n_unique"]
        if int(values[0]) != 0 or int(values[-1]) != end:
            raise InputError(f"{directory / header['arrays'][name]['file']}: '{name}' must run from 0 to "
                             f"{end}, got {int(values[0])} .. {int(values[-1])}")
    index = InvertedIndex(arrays["keys"], arrays["offsets"], arrays["positions"], arrays["directory"],
                          arrays.get("fingerprints"), nbytes=header["nbytes"], database_size=header["database_size"],
                          prefix_bits=header["prefix_bits"], prefix=header["prefix"], threads=threads)
    index.source = directory
    return index


def _read_partitioned(directory: Path, *, mmap: bool, verify: bool, threads: int | None,
                      manifest_path: Path | None = None) -> PartitionedIndex:
    path = directory / MANIFEST_FILE if manifest_path is None else manifest_path
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PARTITIONED_FORMAT_NAME:
        raise InputError(f"{path}: field 'format' is not {PARTITIONED_FORMAT_NAME!r}")
    if manifest.get("version") != PARTITIONED_FORMAT_VERSION:
        raise InputError(f"{path}: field 'version' is {manifest.get('version')!r}, expected {PARTITIONED_FORMAT_VERSION}")
    prefix_bits = manifest.get("prefix_bits")
    if not isinstance(prefix_bits, int) or not 0 <= prefix_bits <= MAX_PREFIX_BITS:
        raise InputError(f"{path}: field 'prefix_bits' is {prefix_bits!r}, expected 0..{MAX_PREFIX_BITS}")
    if manifest.get("partitions") != partition_names(prefix_bits):
        raise InputError(f"{path}: field 'partitions' is {manifest.get('partitions')!r}, "
                         f"expected {partition_names(prefix_bits)!r}")
    parts = [_read_arrays(directory / name, mmap=mmap, verify=verify, threads=threads)
             for name in manifest["partitions"]]
    for v, part in enumerate(parts):
        where = directory / manifest["partitions"][v] / "header.json"
        expected = (prefix_bits, v, manifest.get("nbytes"), manifest.get("database_size"))
        found = (part.prefix_bits, part.prefix, part.nbytes, part.database_size)
        if found != expected:
            raise InputError(f"{where}: (prefix_bits, prefix, nbytes, database_size) = {found}, expected "
                             f"{expected} from {path}")
    if sum(part.size for part in parts) != manifest["database_size"]:
        raise InputError(f"{path}: the partitions hold {sum(part.size for part in parts)} positions, "
                         f"expected database_size = {manifest['database_size']}")
    return parts[0] if prefix_bits == 0 else PartitionedIndex(parts, threads=threads)
