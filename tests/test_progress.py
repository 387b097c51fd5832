"""Progress reporting: bars on a terminal, plain lines in the log file.

A fake clock makes the periodic lines exact; a pseudo-terminal stands in for the user's
terminal. Every log file is checked for carriage returns. The stages that report
progress (labels, merge, index builds, evaluation) are run on tiny inputs and their log
lines counted, and the fault points of the bars are counted as tests/faults/ counts them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import select
import struct
import sys
import termios

import numpy as np
import pyarrow as pa
import pytest

import equihash.fault_injection as fault_injection
import equihash.io
import equihash.progress as progress
from equihash.data.labels import CHUNK_ROWS, write_labels
from equihash.encode import merge_shards
from equihash.evaluate.run import evaluate_run
from equihash.index import (build_index, build_index_from_parquet, build_partitioned_index_from_parquet,
                            read_database_codes, write_index)
from equihash.io import codes_array, fingerprint_schema, labels_array, logits_array, write_table
from equihash.progress import Progress, format_duration, setup_logging

FINAL = re.compile(r"^(?P<desc>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\S+) in (?P<elapsed>[\dhms. ]+), "
                   r"(?P<rate>[\d.e+-]+) (?P=unit)/s")


@pytest.fixture
def log_file(tmp_path):
    """The ``equihash`` logger sent to a file, as a Snakemake script does; state restored after."""
    logger = logging.getLogger("equihash")
    saved = list(logger.handlers), logger.level, logger.propagate, sys.excepthook
    path = tmp_path / "stage.log"
    setup_logging(path)
    yield path
    for handler in logger.handlers:
        handler.close()
    logger.handlers[:], logger.level, logger.propagate, sys.excepthook = saved


def messages(path) -> list[str]:
    """The log messages (timestamp and level cut off), after checking there is no carriage return."""
    text = path.read_bytes().decode()
    assert "\r" not in text
    return [line.split(" INFO ", 1)[1] for line in text.splitlines() if " INFO " in line]


def finals(path) -> dict[str, list[re.Match]]:
    """Final lines by bar description."""
    found: dict[str, list[re.Match]] = {}
    for message in messages(path):
        match = FINAL.match(message)
        if match:
            found.setdefault(match["desc"], []).append(match)
    return found


class FakeClock:
    """Seconds that advance only when told."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda stream: False)


# --------------------------------------------------------------------------- the log lines
def test_periodic_lines_at_the_interval_and_a_final_line(log_file, not_a_terminal):
    clock = FakeClock()
    with Progress(20, "work", "item", every=5, clock=clock) as bar:
        for _ in range(20):
            clock.now += 1.0  # one item per second
            bar.update(1, loss=0.5)
        clock.now += 2.0
    assert messages(log_file) == [
        "work: 5/20 item (25%), 1 item/s, 15.0 s left, loss=0.5",
        "work: 10/20 item (50%), 1 item/s, 10.0 s left, loss=0.5",
        "work: 15/20 item (75%), 1 item/s, 5.0 s left, loss=0.5",
        "work: 20/20 item (100%), 1 item/s, 0.0 s left, loss=0.5",
        "work: 20/20 item in 22.0 s, 0.909 item/s, loss=0.5",
    ]


def test_lines_follow_the_clock_not_the_update_count(log_file, not_a_terminal):
    """A line is due at the first update >= ``every`` seconds after the previous line."""
    clock = FakeClock()
    bar = Progress(1000, "uneven", "row", every=30, clock=clock)
    for step in (10, 25, 4, 101, 1, 1):  # lines at t = 35 and t = 140 (the start is t = 0)
        clock.now += step
        bar.update(100)
    bar.close()
    bar.close()  # closing twice logs once
    assert messages(log_file) == [
        "uneven: 200/1000 row (20%), 5.71 row/s, 2m20s left",
        "uneven: 400/1000 row (40%), 2.86 row/s, 3m30s left",
        "uneven: 600/1000 row in 2m22s, 4.23 row/s",
    ]


def test_a_resumed_bar_rates_only_the_work_of_this_process(log_file, not_a_terminal):
    clock = FakeClock()
    with Progress(10, "resumed", "step", initial=6, clock=clock) as bar:
        clock.now += 8.0
        bar.update(4)
    assert messages(log_file) == ["resumed: 10/10 step in 8.0 s, 0.5 step/s"]


def test_stages_are_logged_with_their_durations(log_file, not_a_terminal):
    clock = FakeClock()
    with Progress(2, "evaluate x", "stage", clock=clock) as bar:
        with bar.stage("reading"):
            clock.now += 2.5
        with bar.stage("sorting"):
            clock.now += 125.0
    assert messages(log_file) == ["evaluate x: reading done in 2.5 s (1/2 stage)",
                                  "evaluate x: sorting done in 2m05s (2/2 stage)",
                                  "evaluate x: 2/2 stage in 2m08s, 0.0157 stage/s"]
    assert bar.done == 2


def test_durations():
    assert [format_duration(s) for s in (0, 59.94, 59.96, 60, 3599.4, 3600, 7384)] == [
        "0.0 s", "59.9 s", "1m00s", "1m00s", "59m59s", "1h00m", "2h03m"]


def test_a_carriage_return_in_a_message_becomes_a_line_break(log_file):
    logging.getLogger("equihash").info("first\rsecond\r\nthird")
    assert messages(log_file) == ["first"]  # the rest are continuation lines without a level
    assert log_file.read_text().splitlines()[1:] == ["second", "third"]


# --------------------------------------------------------------------------- on a terminal
def read_all(fd) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


@contextlib.contextmanager
def pseudo_terminal():
    """sys.stderr replaced by the slave side of a 24 x 120 pseudo-terminal inside the block
    (pytest restores its own capture between fixtures and the test, so this is not a
    fixture); yields a function that drains the terminal and returns all it received."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 x 0: no bar
    stream = os.fdopen(slave, "w", buffering=1)
    drawn = []

    def screen() -> str:
        stream.flush()
        drawn.append(read_all(master))
        return b"".join(drawn).decode(errors="replace")

    saved = sys.stderr
    sys.stderr = stream
    try:
        assert progress.on_terminal(sys.stderr)
        yield screen
    finally:
        sys.stderr = saved
        stream.close()
        os.close(master)


def test_on_a_terminal_the_bar_is_drawn_and_the_log_file_stays_plain(log_file):
    clock = FakeClock()
    with pseudo_terminal() as screen:
        with Progress(50, "encode shard 1/2", "mosaic", every=10, clock=clock) as bar:
            for _ in range(5):
                clock.now += 5.0
                bar.update(10)
                screen()  # drain the pty as a terminal would
        drawn = screen()
    assert "encode shard 1/2" in drawn and "0/50" in drawn and "\r" in drawn  # tqdm drew the bar
    assert messages(log_file) == [
        "encode shard 1/2: 20/50 mosaic (40%), 2 mosaic/s, 15.0 s left",
        "encode shard 1/2: 40/50 mosaic (80%), 2 mosaic/s, 5.0 s left",
        "encode shard 1/2: 50/50 mosaic in 25.0 s, 2 mosaic/s",
    ]


def test_log_lines_to_the_terminal_go_above_the_bar():
    logger = logging.getLogger("equihash")
    saved = list(logger.handlers), logger.level, logger.propagate, sys.excepthook
    try:
        with pseudo_terminal() as screen:
            setup_logging(None)  # the CLI without --log on a terminal
            assert type(logger.handlers[0]).__name__ == "_TerminalHandler"
            clock = FakeClock()
            with Progress(4, "terminal work", "item", every=1, clock=clock) as bar:
                clock.now += 1
                bar.update(2)
            drawn = screen()
    finally:
        logger.handlers[:], logger.level, logger.propagate, sys.excepthook = saved
    assert "terminal work" in drawn.split(" INFO ")[0]  # the bar came first
    lines = [line for line in re.split(r"[\r\n]+", drawn) if " INFO " in line]
    # each log line starts on a fresh line: tqdm.write cleared the bar first
    assert [line.split(" INFO ", 1)[1].rstrip() for line in lines] == [
        "terminal work: 2/4 item (50%), 2 item/s, 1.0 s left", "terminal work: 2/4 item in 1.0 s, 2 item/s"]


def test_no_bar_without_a_terminal(monkeypatch, tmp_path):
    with open(tmp_path / "stderr.txt", "w") as redirected:
        monkeypatch.setattr(sys, "stderr", redirected)
        with Progress(3, "quiet", "item") as bar:
            bar.update(3)
    assert (tmp_path / "stderr.txt").read_text() == ""


# --------------------------------------------------------------------------- fault points
@pytest.fixture
def count_fault_points(monkeypatch):
    """Fault points passed from now on (EQUIHASH_FAULT_AFTER set out of reach), optionally by label."""
    for name in (fault_injection.FAULT_AFTER, fault_injection.FAULT_MATCH, fault_injection.FAULT_GROUP):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(fault_injection.FAULT_AFTER, str(1 << 62))
    labels = []
    real = progress.fault_point

    def counted(label):
        labels.append(label)
        real(label)

    monkeypatch.setattr(progress, "fault_point", counted)
    monkeypatch.setattr(equihash.io, "fault_point", counted)  # the commits of atomic writes
    return labels


def test_every_update_and_every_stage_is_one_fault_point(count_fault_points, not_a_terminal):
    before = fault_injection.points_seen()
    with Progress(7, "train MnistMosaic/ShannonHamming", "step") as bar:
        for _ in range(7):
            bar.update()
    with Progress(2, "evaluate x", "stage") as bar:
        for name in ("a", "b"):
            with bar.stage(name):
                pass
    assert fault_injection.points_seen() - before == 9
    assert count_fault_points == ["train MnistMosaic/ShannonHamming"] * 7 + ["evaluate x"] * 2


# --------------------------------------------------------------------------- the stages
LABEL_SIZES = dict(bank_size=20, m=4, n_database=500, n_positive=16, n_negative=16, n_pairs=8, seed=0, split="test")


def test_write_labels_logs_one_line_per_pass(tmp_path, log_file, not_a_terminal, count_fault_points):
    write_labels(tmp_path / "labels", **LABEL_SIZES)
    lines = finals(log_file)
    assert sorted(lines) == ["labels test database", "labels test positive query labels"]
    assert all(len(found) == 1 and found[0]["done"] == found[0]["total"] == "1" and found[0]["unit"] == "chunk"
               for found in lines.values())
    # fault points: one per chunk of each pass, in pass order, besides the commits of the files
    # (four renames into place and three inner atomic writes of the temporaries)
    bars = [label for label in count_fault_points if not label.startswith("commit ")]
    assert bars == ["labels test positive query labels", "labels test database"]
    assert len(count_fault_points) - len(bars) == 7


def test_write_labels_counts_every_chunk_of_a_large_database(tmp_path, log_file, not_a_terminal):
    n_database = 2 * CHUNK_ROWS + 5  # three chunks
    write_labels(tmp_path / "labels", **{**LABEL_SIZES, "n_database": n_database, "n_positive": 0,
                                         "n_negative": 0, "bank_size": 1000})
    lines = finals(log_file)
    assert list(lines) == ["labels test database"]  # no positive queries: no first pass
    assert (lines["labels test database"][0]["done"], lines["labels test database"][0]["total"]) == ("3", "3")


def test_a_custom_progress_callback_replaces_the_bars(tmp_path, log_file, not_a_terminal):
    calls = []
    write_labels(tmp_path / "labels", progress=lambda *call: calls.append(call), **LABEL_SIZES)
    assert calls == [("positive query labels", 1, 1), ("database", 1, 1)]
    assert finals(log_file) == {}


def test_pass_bars_start_a_new_bar_for_each_rescan(log_file, not_a_terminal):
    from equihash.data.labels import _PassBars

    bars = _PassBars("valid")
    for stage, done, total in [("database", 1, 2), ("database", 2, 2), ("database rescan", 1, 2),
                               ("database rescan", 2, 2), ("database rescan", 1, 3), ("database rescan", 1, 3),
                               ("database rescan", 2, 3)]:
        bars(stage, done, total)
    bars.close()  # the last pass stopped before its end: its line says so
    assert [(m["desc"], m["done"], m["total"]) for m in map(FINAL.match, messages(log_file))] == [
        ("labels valid database", "2", "2"), ("labels valid database rescan", "2", "2"),
        ("labels valid database rescan", "1", "3"), ("labels valid database rescan", "2", "3")]


def fingerprint_file(path, codes: np.ndarray, first: int = 0) -> None:
    ids = pa.array(np.arange(first, first + len(codes), dtype=np.uint64))
    write_table(pa.table([ids, codes_array(codes)], schema=fingerprint_schema(codes.shape[1])), path)


def test_merge_shards_counts_the_rows(tmp_path, log_file, not_a_terminal):
    codes = np.random.default_rng(0).integers(0, 256, size=(300, 2), dtype=np.uint8)
    fingerprint_file(tmp_path / "a.parquet", codes[:120])
    fingerprint_file(tmp_path / "b.parquet", codes[120:], first=120)
    assert merge_shards([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "merged.parquet", 2) == 300
    (line,) = finals(log_file)["merge 2 shards"]
    assert (line["done"], line["total"], line["unit"]) == ("300", "300", "row")


def test_index_builds_count_codes_and_partitions(tmp_path, log_file, not_a_terminal):
    codes = np.random.default_rng(1).integers(0, 16, size=(5000, 1), dtype=np.uint8)
    fingerprint_file(tmp_path / "database.parquet", codes)
    build_index_from_parquet(tmp_path / "database.parquet", tmp_path / "whole", batch_rows=1000)
    build_index_from_parquet(tmp_path / "database.parquet", tmp_path / "spilled", batch_rows=1000,
                                memory_budget=20_000)
    build_partitioned_index_from_parquet(tmp_path / "database.parquet", tmp_path / "parts", prefix_bits=1,
                                   batch_rows=1000)
    lines = finals(log_file)
    assert sorted(lines) == ["index partitions", "index read database.parquet", "index sort",
                             "index sort prefix 0", "index sort prefix 1", "index spill", "index spill prefix 0",
                             "index spill prefix 1"]
    assert [(m["done"], m["total"]) for m in lines["index read database.parquet"]] == [("5000", "5000")]
    assert [(m["done"], m["total"]) for m in lines["index spill"] + lines["index sort"]] == [("5000", "5000")] * 2
    kept = [int(m["done"]) for name in ("index sort prefix 0", "index sort prefix 1") for m in lines[name]]
    assert sum(kept) == 5000 and all(kept)  # each partition sorts its share
    assert [(m["done"], m["total"], m["unit"]) for m in lines["index partitions"]] == [("2", "2", "partition")]
    assert any(re.fullmatch(r"index database\.parquet: 5000 codes, 16 distinct fingerprints, built in .+", line)
               for line in messages(log_file))


def test_evaluate_logs_each_stage(tmp_path, log_file, not_a_terminal):
    codes = np.array([[0x00], [0x00], [0x01], [0xF0]], dtype=np.uint8)
    labels = np.array([[0, 1], [0, 1], [0, 2], [0, 3]], dtype=np.uint32)
    write_table(pa.table({"labels": labels_array(labels)}), tmp_path / "db_labels.parquet")
    write_table(pa.table({"labels": labels_array(labels[[0, 3]]),
                          "ground_truth": pa.array([[0, 1], [3]], type=pa.list_(pa.uint64()))}),
                tmp_path / "pos_labels.parquet")
    fingerprint_file(tmp_path / "database.parquet", codes)
    write_index(build_index(read_database_codes(tmp_path / "database.parquet")), tmp_path / "index")
    for name, query_codes in (("pos", codes[[0, 3]]), ("neg", np.array([[0x0F]], dtype=np.uint8))):
        logits = np.where(np.unpackbits(query_codes, axis=1) == 1, 2.0, -2.0).astype(np.float32)
        write_table(pa.table({"id": pa.array(np.arange(len(logits), dtype=np.uint64)),
                              "code": codes_array(query_codes), "logits": logits_array(logits)}),
                    tmp_path / f"{name}.parquet")
    write_table(pa.table({k: codes_array(codes[:2]) for k in ("anchor", "positive", "negative")}),
                tmp_path / "trip.parquet")
    evaluate_run(index_dir=tmp_path / "index", database_labels=tmp_path / "db_labels.parquet",
                 positive_labels=tmp_path / "pos_labels.parquet", database=tmp_path / "database.parquet",
                 positive_queries=tmp_path / "pos.parquet", negative_queries=tmp_path / "neg.parquet",
                 triplets=tmp_path / "trip.parquet", lookups=[1, 2, 4],
                 names={"task": "MnistMosaic", "model": "ShannonHamming", "variant": "main", "database": "default"},
                 out_path=tmp_path / "metrics.json")
    desc = "evaluate MnistMosaic/ShannonHamming/main/default"
    stages = [re.fullmatch(rf"{desc}: (.+) done in [\d.]+ s \((\d)/5 stage\)", line) for line in messages(log_file)]
    assert [(m[1], m[2]) for m in stages if m] == [
        ("internal collisions", "1"), ("exact lookups", "2"), ("multi-probing with 2 lookups", "3"),
        ("multi-probing with 4 lookups", "4"), ("binary metrics", "5")]
    (final,) = finals(log_file)[desc]
    assert (final["done"], final["total"]) == ("5", "5")
