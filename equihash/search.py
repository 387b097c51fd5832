"""Search the index of a run, like the thesis demo (docs/method.md sections 8-10): ``equihash search``.

A query is either

* a query of the run, by id: row ``query_id`` of the run's positive (or negative) query
  files; its fingerprint and logits come from the fingerprints directory, its label and
  ground truth from the labels directory, and its image is regenerated, or
* an image file: a mosaic of the run's task as a PNG: 56x56 grayscale for MnistMosaic
  (the 2x2 grid of 28x28 digits, pixel values /255 as in docs/method.md section 2.1; a colour file is
  converted to luminance), 270x180 RGB for OpenImagesMosaic (docs/method.md section 2.2). The
  trained network encodes it; its label (the bank ids of its cells) may be given, which
  makes the ground truth and the relevance of every retrieved position known.

The query's fingerprint is looked up in the run's index, with multi-probing over its L
most likely codes when ``lookups`` > 1 (docs/method.md section 10). The result lists the retrieved
positions with their database labels and whether each is relevant (its label equals the
query's). :func:`write_grid` draws the PNG of the thesis demo: the query, its ground
truth and the retrieved instances, the retrieved ones framed green when relevant and red
when not.

Instances are regenerated, never stored: database position i is instance i of the keyed
stream (seed, split, "database"), query j of kind K instance j of (seed, split,
"K_queries"), exactly as ``equihash.encode`` encoded them (the task's ``noisy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from equihash.data.examples import display_pixels
from equihash.data.keyed import KeyedRandom
from equihash.index import read_index
from equihash.io import InputError, atomic_path, check_schema, code_type, column_to_numpy, labels_type, read_label_rows

QUERY_KINDS = ("positive", "negative")
GRID_HEIGHT = 112  # instances are enlarged (nearest neighbour) to at least this height in the grid
FRAME = 4  # frame width in grid pixels
MARGIN_LEFT, GAP, CAPTION = 120, 8, 14  # row titles, space between tiles, position captions
RELEVANT, IRRELEVANT, NEUTRAL = (0, 170, 0), (210, 0, 0), (150, 150, 150)


@dataclass
class SearchResult:
    """One query and what the index retrieved for it."""

    description: str  # "positive query 17", "image query.png"
    code: np.ndarray  # (B,) uint8 fingerprint of the query (the sign code of its logits)
    lookups: int  # L, number of probed codes
    query_image: np.ndarray  # (H, W) float32 instance of the query
    label: np.ndarray | None  # (m,) label of the query; None when unknown
    ground_truth: np.ndarray | None  # increasing positions with the query's label; None when unknown
    retrieved: np.ndarray  # increasing retrieved positions
    retrieved_labels: np.ndarray  # (r, m) database labels of the retrieved positions

    @property
    def relevant(self) -> np.ndarray | None:
        """Per retrieved position: its label equals the query's (None when the label is unknown)."""
        if self.label is None:
            return None
        return (self.retrieved_labels == self.label).all(axis=1)

    def report(self, max_rows: int | None = None) -> str:
        """The lines printed by ``equihash search`` (the first ``max_rows`` retrieved positions)."""
        label = "unknown" if self.label is None else _format_label(self.label)
        lines = [f"query: {self.description}, label {label}, fingerprint {self.code.tobytes().hex()}",
                 f"lookups: {self.lookups}" + (" (multi-probing)" if self.lookups > 1 else "")]
        if self.ground_truth is not None:
            lines.append(f"ground truth: {len(self.ground_truth)} position(s)")
        lines.append(f"retrieved: {len(self.retrieved)} position(s)")
        relevant = self.relevant
        if len(self.retrieved[:max_rows]):
            lines.append(f"{'position':>12}  {'label':<28}relevant")
            for i, position in enumerate(self.retrieved[:max_rows]):
                verdict = "?" if relevant is None else ("yes" if relevant[i] else "no")
                lines.append(f"{int(position):>12}  {_format_label(self.retrieved_labels[i]):<28}{verdict}")
        if max_rows is not None and len(self.retrieved) > max_rows:
            lines.append(f"{'':>12}  ... {len(self.retrieved) - max_rows} more")
        if self.ground_truth is not None:
            found = int(np.count_nonzero(relevant)) if relevant is not None else 0
            perfect = found == len(self.ground_truth) == len(self.retrieved)
            lines.append(f"relevant retrieved: {found} of {len(self.ground_truth)}; "
                         f"perfect retrieval: {'yes' if perfect else 'no'}")
        return "\n".join(lines)


def _format_label(label) -> str:
    return "(" + ", ".join(str(int(i)) for i in label) + ")"


# ----------------------------------------------------------------------------- labels
def labels_at(path, positions) -> np.ndarray:
    """Database labels (len(positions), m) of increasing ``positions``, reading only the row
    groups of the labels file that hold them."""
    path = Path(path)
    positions = np.asarray(positions, dtype=np.int64)
    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    group = np.searchsorted(bounds, positions, side="right") - 1
    parts = []
    for g in np.unique(group):
        rows = read_label_rows(path, int(bounds[g]), int(bounds[g + 1]))
        parts.append(rows[positions[group == g] - bounds[g]])
    if not parts:
        m = pq.read_schema(path).field("labels").type.list_size
        return np.zeros((0, m), dtype=np.uint32)
    return np.concatenate(parts)


def positions_with_label(path, label, batch_rows: int = 1 << 20) -> np.ndarray:
    """Increasing database positions whose label equals ``label``: one streaming pass."""
    reader = pq.ParquetFile(path)
    found, first = [], 0
    for batch in reader.iter_batches(batch_size=batch_rows, columns=["labels"]):
        labels = column_to_numpy(batch.column("labels"), path=path, name="labels")
        found.append(np.flatnonzero((labels == label).all(axis=1)) + first)
        first += len(labels)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- images
def read_mosaic_png(path, mosaic) -> np.ndarray:
    """A PNG mosaic as the instance the network of ``mosaic``'s task reads: (H, W) float32
    values /255 for a grayscale task, (3, H, W) uint8 for OpenImagesMosaic."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            image.load()
            colour = getattr(mosaic, "channels", 1) == 3
            size, pixels = image.size, np.asarray(image.convert("RGB" if colour else "L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    height, width = mosaic.shape
    if pixels.shape[:2] != (height, width):
        raise InputError(f"{path}: image is {size[0]}x{size[1]} pixels, expected a {width}x{height} "
                         f"{'RGB' if colour else 'grayscale'} {type(mosaic).__name__} mosaic")
    if colour:
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return pixels.astype(np.float32) / np.float32(255)


def to_pixels(instance: np.ndarray) -> np.ndarray:
    """One instance as (H, W, 3) uint8 RGB pixels (``equihash.data.examples.display_pixels``)."""
    return display_pixels(np.asarray(instance)[None])[0]


# ----------------------------------------------------------------------------- the run
class RunSearch:
    """The index of a run and the files needed to explain its answers.

    ``index_dir`` (written by ``equihash index``), ``labels_dir`` (``equihash labels``),
    ``fingerprints_dir`` (``encode-queries``), the ``mosaic`` generator of the task over
    the bank split the labels refer to, with the run's noise
    (``equihash.tasks.open_mosaic``), and the database ``seed`` and ``split``.
    """

    def __init__(self, *, index_dir, labels_dir, fingerprints_dir, mosaic, split: str, seed: int):
        self.labels_dir, self.fingerprints_dir = Path(labels_dir), Path(fingerprints_dir)
        self.index = read_index(index_dir)
        self.mosaic = mosaic
        self.split, self.seed = split, int(seed)
        self.database_labels = self.labels_dir / "database.parquet"
        columns = {"labels": labels_type(self.mosaic.cells)}
        rows = _rows(self.database_labels, columns)
        if self.index.prefix_bits:
            raise InputError(f"{Path(index_dir) / 'header.json'}: one partition (prefix {self.index.prefix} of "
                             f"{self.index.prefix_bits} bits) of an index; expected the whole index of the run")
        if rows != self.index.database_size:
            raise InputError(f"{Path(index_dir) / 'header.json'}: an index of {self.index.database_size} database "
                             f"positions, but {self.database_labels} has {rows} rows; expected the index of "
                             "this database (equihash index on its merged fingerprints)")

    def query_file(self, kind: str) -> tuple[Path, Path]:
        if kind not in QUERY_KINDS:
            raise InputError(f"query kind: expected one of {QUERY_KINDS}, got {kind!r}")
        return self.fingerprints_dir / f"{kind}_queries.parquet", self.labels_dir / f"{kind}_queries.parquet"

    def by_query_id(self, query_id: int, kind: str = "positive", lookups: int = 1) -> SearchResult:
        """Search with query ``query_id`` of the run's positive or negative queries."""
        fingerprints, labels_path = self.query_file(kind)
        nbits = 8 * self.index.nbytes
        columns = {"code": code_type(self.index.nbytes), "logits": pa.list_(pa.float32(), nbits)}
        n_queries = _rows(fingerprints, columns)
        if not 0 <= query_id < n_queries:
            raise InputError(f"{fingerprints}: query id {query_id} out of range, expected 0 <= id < {n_queries}")
        row = _read_row(fingerprints, list(columns), query_id)
        code = column_to_numpy(row["code"], path=fingerprints, name="code")[0]
        logits = column_to_numpy(row["logits"], path=fingerprints, name="logits")[0]
        label = read_label_rows(labels_path, query_id, query_id + 1)[0]
        if kind == "positive":
            check_schema(labels_path, {"ground_truth": pa.list_(pa.uint64())})
            lists = _read_row(labels_path, ["ground_truth"], query_id)["ground_truth"]
            ground_truth = lists[0].values.to_numpy().astype(np.int64)
        else:  # negative queries: labels absent from the database
            ground_truth = np.zeros(0, dtype=np.int64)
        stream = KeyedRandom(self.seed, self.split, f"{kind}_queries")
        image = self.mosaic.noisy(label[None, :], stream, np.array([query_id]))[0]
        return self._search(f"{kind} query {query_id}", code, logits, lookups, image, label, ground_truth)

    def by_image(self, image: np.ndarray, logits: np.ndarray, lookups: int = 1, *, label=None,
                 description: str = "image") -> SearchResult:
        """Search with an instance ``image`` whose network outputs are ``logits`` (k,); with its
        ``label`` (m bank ids) the ground truth is found by scanning the database labels."""
        ground_truth = None
        if label is not None:
            label = np.asarray(label, dtype=np.uint32)
            if label.shape != (self.mosaic.cells,):
                raise InputError(f"label: expected {self.mosaic.cells} bank ids, got {label.tolist()}")
            ground_truth = positions_with_label(self.database_labels, label)
        code = np.packbits(np.asarray(logits) > 0)
        return self._search(description, code, logits, lookups, image, label, ground_truth)

    def _search(self, description, code, logits, lookups, image, label, ground_truth) -> SearchResult:
        retrieved = self.index.multiprobe_one(np.asarray(logits, dtype=np.float32), lookups).astype(np.int64)
        return SearchResult(description=description, code=np.asarray(code, dtype=np.uint8), lookups=int(lookups),
                            query_image=image, label=label, ground_truth=ground_truth, retrieved=retrieved,
                            retrieved_labels=labels_at(self.database_labels, retrieved))

    def database_instances(self, positions, labels) -> np.ndarray:
        """The noisy instances of database ``positions`` (with their ``labels``), regenerated."""
        stream = KeyedRandom(self.seed, self.split, "database")
        return self.mosaic.noisy(np.asarray(labels).reshape(-1, self.mosaic.cells), stream,
                                 np.asarray(positions, dtype=np.int64))

    # ------------------------------------------------------------------ the picture
    def write_grid(self, result: SearchResult, out_png, show: int = 8) -> None:
        """The thesis demo picture: row 1 the query, row 2 (up to ``show`` of) its ground
        truth, row 3 (up to ``show`` of) the retrieved instances framed green (relevant) or
        red (irrelevant), relevant ones first, gray when the query's label is unknown.
        Captions give the positions."""
        from PIL import Image, ImageDraw

        ground_truth = np.zeros(0, np.int64) if result.ground_truth is None else result.ground_truth[:show]
        relevant = result.relevant
        order = np.arange(len(result.retrieved)) if relevant is None else np.argsort(~relevant, kind="stable")
        order = order[:show]
        shown = result.retrieved[order]
        relevant = None if relevant is None else relevant[order]
        rows = [("query", [(result.query_image, NEUTRAL, "")]),
                (f"ground truth ({'?' if result.ground_truth is None else len(result.ground_truth)})",
                 list(zip(self.database_instances(ground_truth, labels_at(self.database_labels, ground_truth)),
                          [NEUTRAL] * len(ground_truth), [str(p) for p in ground_truth]))),
                (f"retrieved ({len(result.retrieved)})",
                 [(instance, NEUTRAL if relevant is None else (RELEVANT if relevant[i] else IRRELEVANT), str(p))
                  for i, (instance, p) in enumerate(zip(
                      self.database_instances(shown, result.retrieved_labels[order]), shown))])]
        height, width = tile_size(self.mosaic.shape)
        canvas = Image.new("RGB", grid_size(self.mosaic.shape, show), "white")
        draw = ImageDraw.Draw(canvas)
        for r, (title, tiles) in enumerate(rows):
            draw.text((4, tile_origin(self.mosaic.shape, r, 0)[1] + height // 2), title, fill="black")
            for c, (instance, colour, text) in enumerate(tiles):
                x, y = tile_origin(self.mosaic.shape, r, c)
                draw.rectangle([x, y, x + width + 2 * FRAME - 1, y + height + 2 * FRAME - 1], fill=colour)
                tile = Image.fromarray(to_pixels(instance)).resize((width, height), Image.NEAREST)
                canvas.paste(tile, (x + FRAME, y + FRAME))
                draw.text((x, y + height + 2 * FRAME + 1), text, fill="black")
        with atomic_path(out_png) as tmp:
            canvas.save(tmp, format="PNG")


def tile_size(shape) -> tuple[int, int]:
    """(height, width) of the tile of an instance of ``shape`` (H, W): enlarged by the
    smallest integer factor that makes it at least GRID_HEIGHT pixels high."""
    scale = max(1, -(-GRID_HEIGHT // shape[0]))
    return shape[0] * scale, shape[1] * scale


def tile_origin(shape, row: int, column: int) -> tuple[int, int]:
    """Top-left pixel (x, y) of the frame of tile ``column`` in grid row ``row`` (0 query,
    1 ground truth, 2 retrieved), for instances of ``shape`` (H, W)."""
    height, width = tile_size(shape)
    return (MARGIN_LEFT + column * (width + 2 * FRAME + GAP),
            GAP + row * (height + 2 * FRAME + CAPTION + GAP))


def grid_size(shape, show: int) -> tuple[int, int]:
    """(width, height) in pixels of the picture with ``show`` tiles per row."""
    return tile_origin(shape, 3, show)


def _rows(path, columns) -> int:
    """Rows of a Parquet file, after checking that it has these typed columns."""
    check_schema(path, columns)
    return pq.ParquetFile(path).metadata.num_rows


def _read_row(path, columns, row: int) -> pa.Table:
    """Row ``row`` of a Parquet file (those columns), reading only its row group."""
    reader = pq.ParquetFile(path)
    first = 0
    for g in range(reader.num_row_groups):
        size = reader.metadata.row_group(g).num_rows
        if row < first + size:
            return reader.read_row_group(g, columns=columns).slice(row - first, 1)
        first += size
    raise InputError(f"{path}: row {row} requested, the file has {first} rows")
