"""Encoding: shards, their merge, queries and triplets (docs/method.md section 7)."""

import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from equihash.data.keyed import KeyedRandom
from equihash.data.labels import write_labels
from equihash import encode
from equihash.nn import precision
from equihash.encode import Encoder, encode_database_shard, encode_queries, merge_shards, shard_range
from equihash.config import default_config
from equihash.io import InputError, fingerprint_encoding, read_columns, read_labels
from equihash.nn.mnist import MnistMosaicCNN
from equihash.codes import pack_codes
from equihash.train.loop import save_model

BANK = np.random.default_rng(1).integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
N = 700


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def setup(tmp_path_factory, request):
    """A model, labels and its encoder at each precision."""
    root = tmp_path_factory.mktemp("encode")
    torch.manual_seed(0)
    save_model(MnistMosaicCNN(16), {"task": "MnistMosaic", "nbits": 16, "noise_sigma": 0.2}, root / "model.pt")
    write_labels(root / "labels", bank_size=len(BANK), m=4, n_database=N, n_positive=20, n_negative=20,
                 n_pairs=20, seed=0, split="test")
    return root, Encoder(root / "model.pt", BANK, batch_size=128, precision=request.param)


def merged(root, encoder, nb_shards):
    paths = [root / f"{nb_shards}" / f"{i}-of-{nb_shards}.parquet" for i in range(nb_shards)]
    for i, path in enumerate(paths):
        encode_database_shard(encoder, root / "labels" / "database.parquet", seed=0, split="test", shard=i,
                              nb_shards=nb_shards, out_path=path)
    out = root / f"merged-{nb_shards}.parquet"
    assert merge_shards(paths, out, nbytes=2) == N
    return out


@pytest.mark.parametrize("n, nb_shards", [(0, 1), (1, 3), (10, 3), (700, 7), (5, 8)])
def test_shard_ranges_tile_the_database(n, nb_shards):
    ranges = [shard_range(n, i, nb_shards) for i in range(nb_shards)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
    with pytest.raises(InputError, match="shard index"):
        shard_range(n, nb_shards, nb_shards)


def test_merged_database_is_byte_identical_for_any_shard_count(setup):
    root, encoder = setup
    one, three, seven = (merged(root, encoder, s) for s in (1, 3, 7))
    assert one.read_bytes() == three.read_bytes() == seven.read_bytes()
    columns = read_columns(one, {"id": pq.read_schema(one).field("id").type,
                                 "code": pq.read_schema(one).field("code").type})
    np.testing.assert_array_equal(columns["id"], np.arange(N))
    # the fingerprints are those of instance i of the database stream, packed MSB first
    labels = read_labels(root / "labels" / "database.parquet")
    logits = encoder.logits(labels[:50], KeyedRandom(0, "test", "database"), np.arange(50))
    np.testing.assert_array_equal(columns["code"][:50], np.packbits(logits > 0, axis=1))


def test_fingerprint_does_not_depend_on_where_a_batch_starts(setup):
    _, encoder = setup
    labels = np.random.default_rng(2).integers(0, len(BANK), size=(300, 4), dtype=np.uint32)
    rng = KeyedRandom(0, "test", "database")
    whole = encoder.logits(labels, rng, np.arange(300))
    tail = encoder.logits(labels[77:], rng, np.arange(77, 300))
    np.testing.assert_array_equal(whole[77:], tail)


def test_streams_share_forward_batches_and_keep_their_logits(setup, monkeypatch):
    _, encoder = setup
    sizes = (50, 90, 1, 120)  # 261 rows: 3 passes of 128 together, 5 apart
    streams = [(np.random.default_rng(size).integers(0, len(BANK), size=(size, 4), dtype=np.uint32),
                KeyedRandom(0, "test", f"stream_{size}"), np.arange(size, dtype=np.uint64)) for size in sizes]
    alone = [encoder.logits(*stream) for stream in streams]
    passes = []
    batch_logits = encoder._batch_logits
    monkeypatch.setattr(encoder, "_batch_logits", lambda x: passes.append(len(x)) or batch_logits(x))
    together = encoder.stream_logits(streams)
    assert sorted(passes) == [5, 128, 128]
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("lanes, threads", [(1, 1), (2, 2), (3, 1), (2, 3)])
def test_lanes_give_the_logits_of_a_plain_loop(setup, monkeypatch, lanes, threads):
    _, encoder = setup
    labels = np.random.default_rng(3).integers(0, len(BANK), size=(300, 4), dtype=np.uint32)
    ids = np.arange(1000, 1300)
    rng = KeyedRandom(0, "test", "database")
    plain = encoder.forward(encoder.mosaic.noisy(labels, rng, ids))
    monkeypatch.setattr(encode, "LANES", lanes)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        np.testing.assert_array_equal(encoder.logits(labels, rng, ids), plain)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_a_failing_lane_stops_the_encoding(setup, monkeypatch):
    _, encoder = setup
    labels = np.random.default_rng(4).integers(0, len(BANK), size=(128 * 12, 4), dtype=np.uint32)
    calls, noisy, failing = [], encoder.mosaic.noisy, threading.Event()

    def flaky(batch, rng, ids, **kwargs):  # lane 0 makes batch 0, lane 1 batch 1 (rows 128..255)
        calls.append(int(ids[0]))
        if ids[0] == 128:
            failing.set()
            raise OSError("bank read failed")
        failing.wait(10)  # lane 0 finishes its batch after lane 1 failed
        time.sleep(0.5)  # and after lane 1 recorded its failure (it raises, then sets the stop flag)
        return noisy(batch, rng, ids, **kwargs)

    monkeypatch.setattr(encode, "LANES", 2)
    monkeypatch.setattr(encoder.mosaic, "noisy", flaky)
    with pytest.raises(OSError, match="bank read failed"):
        encoder.logits(labels, KeyedRandom(0, "test", "database"), np.arange(len(labels)))
    assert sorted(calls) == [0, 128]


def test_an_encoder_records_the_precision_auto_resolved_to(monkeypatch, tmp_path):
    save_model(MnistMosaicCNN(16), {"task": "MnistMosaic", "nbits": 16, "noise_sigma": 0.2}, tmp_path / "model.pt")
    for flags, resolved in (({"avx2"}, "fp32"), ({"amx_bf16"}, "bf16")):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
        encoder = Encoder(tmp_path / "model.pt", BANK, precision="auto")
        assert encoder.precision == encoder.identity["precision"] == resolved


def test_precisions_are_different_artifacts_that_never_mix(setup):
    root, encoder = setup
    other = Encoder(root / "model.pt", BANK, batch_size=128,
                    precision={"fp32": "bf16", "bf16": "fp32"}[encoder.precision])
    assert encoder.identity["precision"] == encoder.precision and other.identity["precision"] == other.precision
    labels = read_labels(root / "labels" / "database.parquet")[:256]
    rng = KeyedRandom(0, "test", "database")
    mine, theirs = encoder.logits(labels, rng, np.arange(256)), other.logits(labels, rng, np.arange(256))
    assert not np.array_equal(mine, theirs)  # bf16 rounds its products differently...
    assert np.mean((mine > 0) == (theirs > 0)) > 0.95  # ...and flips the bits of logits near 0 only
    np.testing.assert_array_equal(encoder.logits(labels, rng, np.arange(256)), mine)  # rerun: bit-identical
    # a shard of the other precision cannot join this precision's shards
    merged(root, encoder, 3)
    encode_database_shard(other, root / "labels" / "database.parquet", seed=0, split="test", shard=1,
                          nb_shards=3, out_path=root / "other-1-of-3.parquet")
    with pytest.raises(InputError, match=f"other-1-of-3.parquet: fingerprints encoded with precision "
                                         f"{other.precision}, forward batch 128, .*0-of-3.parquet with precision "
                                         f"{encoder.precision}, forward batch 128"):
        merge_shards([root / "3" / "0-of-3.parquet", root / "other-1-of-3.parquet", root / "3" / "2-of-3.parquet"],
                     root / "mixed.parquet", nbytes=2)
    assert not (root / "mixed.parquet").exists()
    assert fingerprint_encoding(root / "merged-3.parquet") == {"precision": encoder.precision, "forward_batch": 128}


def test_forward_batches_never_mix_and_the_library_default_is_the_configurations(setup):
    root, encoder = setup
    assert encode.FORWARD_BATCH == default_config()["encode"]["forward_batch"]
    other = Encoder(root / "model.pt", BANK, batch_size=64, precision=encoder.precision)
    assert other.identity["forward_batch"] == other.encoding["forward_batch"] == 64
    merged(root, encoder, 3)
    encode_database_shard(other, root / "labels" / "database.parquet", seed=0, split="test", shard=2,
                          nb_shards=3, out_path=root / "batch64-2-of-3.parquet")
    assert fingerprint_encoding(root / "batch64-2-of-3.parquet") == {"precision": encoder.precision,
                                                                     "forward_batch": 64}
    with pytest.raises(InputError, match=f"batch64-2-of-3.parquet: fingerprints encoded with precision "
                                         f"{encoder.precision}, forward batch 64, .*0-of-3.parquet with precision "
                                         f"{encoder.precision}, forward batch 128; .*encode.forward_batch"):
        merge_shards([root / "3" / "0-of-3.parquet", root / "3" / "1-of-3.parquet", root / "batch64-2-of-3.parquet"],
                     root / "mixed.parquet", nbytes=2)
    assert not (root / "mixed.parquet").exists()


def test_merge_rejects_a_gap_in_ids(setup):
    root, encoder = setup
    merged(root, encoder, 3)
    with pytest.raises(InputError, match="2-of-3.parquet: ids must continue the contiguous range at 233"):
        merge_shards([root / "3" / "0-of-3.parquet", root / "3" / "2-of-3.parquet", root / "3" / "1-of-3.parquet"],
                     root / "bad.parquet", nbytes=2)
    assert not (root / "bad.parquet").exists()


def test_queries_and_triplets(setup):
    root, encoder = setup
    out = {name: root / f"{name}.parquet" for name in ("pos", "neg", "trip")}
    encode_queries(encoder, root / "labels", seed=0, split="test", out_positive=out["pos"],
                   out_negative=out["neg"], out_triplets=out["trip"])
    schema = pq.read_schema(out["pos"])
    assert [str(t) for t in schema.types] == ["uint64", "fixed_size_binary[2]", "fixed_size_list<element: float>[16]"]
    pos = read_columns(out["pos"], {name: schema.field(name).type for name in schema.names})
    labels = read_labels(root / "labels" / "positive_queries.parquet")
    expected = encoder.logits(labels, KeyedRandom(0, "test", "positive_queries"), np.arange(len(labels)))
    np.testing.assert_array_equal(pos["logits"], expected)
    np.testing.assert_array_equal(pos["code"], pack_codes(expected))
    trip = pq.read_table(out["trip"])
    assert trip.column_names == ["anchor", "positive", "negative"] and trip.num_rows == 20
    # anchor and positive are two different noisy instances of the same label
    anchors = read_columns(out["trip"], {"anchor": trip.schema.field("anchor").type})["anchor"]
    pair_labels = read_labels(root / "labels" / "negative_pairs.parquet", column="anchor")
    direct = encoder.logits(pair_labels, KeyedRandom(0, "test", "triplet_anchor"), np.arange(20))
    np.testing.assert_array_equal(anchors, pack_codes(direct))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_encoder_on_cuda_without_a_gpu_fails_naming_device(setup):
    root, _ = setup
    with pytest.raises(InputError, match="device: the configuration asks for cuda"):
        Encoder(root / "model.pt", BANK, device="cuda")
    assert Encoder(root / "model.pt", BANK, device="auto").identity["device"] == "cpu"
