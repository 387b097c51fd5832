"""kill -9 the labels, train, encode and index stages at seeded random points, rerun, compare.

Each stage is first run cleanly in this process, counting its fault points (every
progress update and every atomic commit, see equihash.fault_injection). Then, for each of five
points drawn with a fixed seed, the stage runs in a child process that SIGKILLs itself
at that point (``EQUIHASH_FAULT_AFTER``); the index stage, whose only fault points are the
batches of codes it reads and its final commit, is also killed after seeded random delays
into its work. After each kill:

- every output present is byte-identical to the clean one (nothing half-written looks finished);
- the rerun (in this process) redoes only what was not saved: the encoded rows of the
  parts not yet saved, the training steps after the last checkpoint;
- the stage's directory is then byte-identical to the clean run's, file for file, and
  holds no temporary or partial state.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from equihash.encode import Encoder, partial_dir
from equihash.train.loop import Trainer
from fault_harness import counting_fault_points, leftovers, one_thread, run_child, snapshot
from fault_stages import ENCODE_ROWS, OUTPUTS, PART_ROWS, STAGES, train_params

SEED = 8
CHECKPOINT = "model/checkpoints/last.pt"
POINTS = 5
DELAY_STAGES = ("index",)  # too few fault points: killed after random delays as well


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory):
    """Each stage run without a fault: its files, number of fault points and duration."""
    runs = {}
    for stage, run in STAGES.items():
        work = tmp_path_factory.mktemp(f"clean-{stage}")
        with one_thread(), counting_fault_points() as counter:
            start = time.perf_counter()
            run(inputs, work)
            seconds = time.perf_counter() - start
        runs[stage] = {"work": work, "files": snapshot(work), "fault_points": counter["count"], "seconds": seconds}
    return runs


def faults(stage: str, clean: dict) -> list[tuple[str, float]]:
    """The seeded kill points of a stage: ("after", n-th fault point) or ("delay", seconds)."""
    rng = np.random.default_rng([SEED, list(STAGES).index(stage)])
    total = clean[stage]["fault_points"]
    if stage in DELAY_STAGES:
        delays = np.sort(rng.uniform(0, clean[stage]["seconds"], POINTS))
        return [("after", int(rng.integers(1, total + 1)))] + [("delay", float(d)) for d in delays]
    assert total >= POINTS, (stage, total)
    return [("after", int(n)) for n in np.sort(rng.choice(np.arange(1, total + 1), size=POINTS, replace=False))]


def same_values(a, b) -> bool:
    """Equal nested containers of tensors and numbers (NaN equal to NaN), key order included."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_values, a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return type(a) is type(b) and (a == b or (a != a and b != b))


CASES = [(stage, i) for stage in STAGES for i in range(POINTS + 1 if stage in DELAY_STAGES else POINTS)]


def saved_work(stage: str, work: Path) -> int:
    """Work a kill left saved: encoded rows in the shard's parts, training steps in the checkpoint."""
    if stage == "encode":
        parts = partial_dir(work / "shards" / "1-of-2.parquet")
        if not (parts / "spec.json").exists():
            return 0
        rows = ENCODE_ROWS - ENCODE_ROWS // 2
        return sum(min(PART_ROWS, rows - PART_ROWS * int(p.stem.split("-")[1])) for p in parts.glob("part-*.npz"))
    if stage == "train":
        checkpoint = work / CHECKPOINT
        return torch.load(checkpoint, weights_only=True)["step"] if checkpoint.exists() else 0
    return 0


def rerun_counting_work(stage: str, inputs: Path, work: Path, monkeypatch) -> int:
    """Rerun the stage here; return the rows it encoded (encode) or the steps it trained (train)."""
    done = []
    if stage == "encode":
        logits = Encoder.logits
        monkeypatch.setattr(Encoder, "logits",
                            lambda self, labels, *args: done.append(len(labels)) or logits(self, labels, *args))
    if stage == "train":
        step = Trainer.train_step
        monkeypatch.setattr(Trainer, "train_step", lambda self, *args: done.append(1) or step(self, *args))
    with one_thread():
        STAGES[stage](inputs, work)
    return sum(done)


@pytest.mark.parametrize("stage, case", CASES)
def test_killed_stage_reruns_to_identical_outputs(stage, case, clean, inputs, tmp_path, monkeypatch):
    reference = clean[stage]
    kind, value = faults(stage, clean)[case]
    work = tmp_path / "work"
    status = run_child(stage, inputs, work, **{kind: value})
    if kind == "after":
        assert status == -signal.SIGKILL
    left = leftovers(work) if work.exists() else []
    for path, digest in (snapshot(work) if work.exists() else {}).items():  # outputs: absent or finished
        if path.startswith(tuple(OUTPUTS[stage])) and not path.startswith(tuple(left)):
            assert digest == reference["files"].get(path), path
    saved = saved_work(stage, work)

    redone = rerun_counting_work(stage, inputs, work, monkeypatch)
    if stage == "encode":
        assert redone == ENCODE_ROWS // 2 - saved  # the saved parts are not encoded again
    if stage == "train":
        assert redone == train_params()["steps"] - saved  # training resumes at the checkpoint
    assert leftovers(work) == []
    files = snapshot(work)
    if stage == "train":  # resumption state, not an output: the same state, pickled in another object layout
        assert same_values(*(torch.load(root / CHECKPOINT, weights_only=True) for root in (work, reference["work"])))
        files[CHECKPOINT] = reference["files"][CHECKPOINT]
    assert files == reference["files"]
    print(f"\n{stage} {kind}={value:.3g} of {reference['fault_points']} points: exit {status}, "
          f"left {len(left)} temporary/partial, saved {saved}, redone {redone}, rerun identical")
