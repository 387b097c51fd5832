"""equihash.io.atomic_path: all or nothing, an artifact's permissions are a plain file's, and
concurrent writers of one folder (real processes) lose nothing."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from equihash.io import atomic_path, stale_temporaries


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_committed_file_and_folder_get_the_modes_of_open_and_mkdir(tmp_path):
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    with atomic_path(tmp_path / "d", directory=True) as tmp:
        (tmp / "f").write_text("y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask()
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~umask()


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- concurrent writers
WRITER = """
import sys
from pathlib import Path
from equihash.io import atomic_path

target, content, directory = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "directory"
with atomic_path(target, directory=directory) as tmp:
    data = tmp / "data" if directory else tmp
    data.write_text(content[:len(content) // 2])
    print(tmp.name, flush=True)  # halfway: holds its temporary
    sys.stdin.readline()  # until told to go on
    with open(data, "a") as handle:
        handle.write(content[len(content) // 2:])
"""


def start_writer(target, content: str, kind: str):
    """A process writing ``content`` to ``target`` through atomic_path; returns it and the
    name of its temporary once it has written half."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target), content, kind], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def finish(child) -> None:
    _, err = child.communicate("\n", timeout=60)
    assert child.returncode == 0, err[-2000:]


def content_of(target: Path, kind: str) -> str:
    return (target / "data" if kind == "directory" else target).read_text()


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_two_processes_writing_one_folder_lose_nothing(tmp_path, kind):
    """Two live writers of one artifact, and a third writing another artifact beside them:
    each keeps its temporary while the others start and commit, every artifact is
    complete, the last rename wins, and no temporary is left."""
    target = tmp_path / "results" / "artifact"
    first, first_tmp = start_writer(target, "A" * 1000, kind)
    second, second_tmp = start_writer(target, "B" * 1000, kind)
    other, _ = start_writer(tmp_path / "results" / "other", "C" * 1000, kind)
    assert first_tmp != second_tmp and {first_tmp, second_tmp} <= set(temporaries(tmp_path / "results"))
    for child in (second, other):
        finish(child)
    assert content_of(target, kind) == "B" * 1000
    assert temporaries(tmp_path / "results") == [first_tmp]  # the first writer's work is still there
    finish(first)
    assert content_of(target, kind) == "A" * 1000  # whole: the second writer removed nothing of it
    assert content_of(tmp_path / "results" / "other", kind) == "C" * 1000
    assert temporaries(tmp_path / "results") == []


def test_a_killed_writers_temporary_is_removed_by_the_next_write_a_live_ones_is_kept(tmp_path):
    target = tmp_path / "artifact"
    killed, killed_tmp = start_writer(target, "K" * 100, "directory")
    live, live_tmp = start_writer(target, "L" * 100, "directory")
    killed.kill()
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL and (tmp_path / killed_tmp / "data").exists()
    elsewhere = tmp_path / ".artifact.another-host-1-abcd_123.tmp"  # a writer this host cannot ask
    elsewhere.mkdir()
    assert stale_temporaries(target) == [tmp_path / killed_tmp]
    with atomic_path(target, directory=True) as tmp:
        (tmp / "data").write_text("N")
    assert not (tmp_path / killed_tmp).exists()  # the killed writer's: removed
    assert (tmp_path / live_tmp).is_dir() and elsewhere.is_dir()  # kept
    finish(live)
    assert (target / "data").read_text() == "L" * 100
    assert temporaries(tmp_path) == [elsewhere.name]


RACER = """
import sys
from pathlib import Path
from equihash.io import atomic_path

target, name, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for r in range(rounds):
    with atomic_path(target, directory=True) as tmp:
        for part in range(20):
            (tmp / f"part-{part}").write_text(f"{name} {r}")
    with atomic_path(target.parent / f"{name}-{r}") as tmp:  # an artifact of its own beside it
        tmp.write_text(name)
"""


def test_two_processes_committing_one_directory_over_and_over_all_succeed(tmp_path):
    """Two processes replace one directory artifact 40 times each, at once: every commit
    succeeds, the artifact is always one writer's whole output, each writer's own files
    are all there, and no temporary is left."""
    target, rounds = tmp_path / "index", 40
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(target), name, str(rounds)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "AB"]
    for racer in racers:
        _, err = racer.communicate(timeout=300)
        assert racer.returncode == 0, err[-2000:]
    contents = {(target / f"part-{part}").read_text() for part in range(20)}
    assert len(contents) == 1 and sorted(p.name for p in target.iterdir()) == sorted(f"part-{i}" for i in range(20))
    assert contents <= {f"{name} {rounds - 1}" for name in "AB"}  # the last commit of one of them
    for name in "AB":
        assert all((tmp_path / f"{name}-{r}").read_text() == name for r in range(rounds))
    assert temporaries(tmp_path) == []
