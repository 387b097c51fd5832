"""One entry point per task to its data: the bank splits, and the mosaic of a split with its noise.

The two tasks keep their banks differently (docs/method.md section 2):

* ``MnistMosaic``: one HDF5 file (``equihash.data.banks``), small enough to read into memory;
  the instance noise is Gaussian with ``noise_sigma``.
* ``OpenImagesMosaic``: a folder holding ``train.hdf5``, ``valid.hdf5`` and ``test.hdf5``
  (``equihash.data.openimages``), memory-mapped unless ``in_memory`` is asked; the noise
  needs the Perlin file (docs/method.md section 3).

``bank`` below is therefore the MNIST bank file or the OpenImages bank folder. Every stage
(training, encoding, labels, search, the CLI) opens a task's data through these functions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from equihash.io import InputError

MNIST = "MnistMosaic"
OPENIMAGES = "OpenImagesMosaic"


def bank_split_sizes(task: str, bank) -> dict[str, int]:
    """Images per split of a task's bank (the bank size B of docs/method.md section 4); reads metadata only."""
    if task == OPENIMAGES:
        from equihash.data.openimages import openimages_split_sizes

        return openimages_split_sizes(bank)
    from equihash.data import banks

    return banks.bank_split_sizes(bank)


def open_bank(task: str, bank, split: str, *, in_memory: bool = False):
    """The images of one split: an array indexable by image id (row ``i`` is image id ``i``).

    MNIST banks are read into memory; OpenImages split files are memory-mapped (or read
    chunk by chunk) unless ``in_memory``.
    """
    if task == OPENIMAGES:
        from equihash.data.openimages import read_openimages_bank

        return read_openimages_bank(bank, split, in_memory=in_memory)
    from equihash.data.banks import read_bank

    return read_bank(bank, split)


def make_mosaic(task: str, images, *, noise_sigma: float | None = None, perlin=None, in_memory: bool = False):
    """The mosaic generator of ``task`` over the images of one split.

    MnistMosaic needs ``noise_sigma``; OpenImagesMosaic needs ``perlin``, the Perlin file's
    path (or an already opened ``(resolution1, resolution2)`` pair).
    """
    from equihash.data.mosaic import MnistMosaic, OpenImagesMosaic, task_class

    cls = task_class(task)
    if cls is MnistMosaic:
        if noise_sigma is None:
            raise InputError(f"{task}: the instance noise needs noise_sigma (tasks.{task}.noise_sigma)")
        return MnistMosaic(images, sigma=noise_sigma)
    if cls is OpenImagesMosaic:
        if perlin is None:
            raise InputError(f"{task}: the instance noise needs the Perlin file (tasks.{task}.perlin, "
                             "or --perlin on the command line)")
        if isinstance(perlin, (str, Path)):
            from equihash.data.openimages import read_perlin

            perlin = read_perlin(perlin, in_memory=in_memory)
        return OpenImagesMosaic(images, perlin)
    raise InputError(f"{task}: no mosaic generator")


def open_mosaics(task: str, bank, splits, *, noise_sigma: float | None = None, perlin=None,
                 in_memory: bool = False) -> list:
    """``make_mosaic`` over each split of ``splits`` of the bank ``bank``; the Perlin file is
    opened once for all of them (with ``in_memory`` it is read into memory once)."""
    if isinstance(perlin, (str, Path)):
        from equihash.data.openimages import read_perlin

        perlin = read_perlin(perlin, in_memory=in_memory)
    return [make_mosaic(task, open_bank(task, bank, split, in_memory=in_memory), noise_sigma=noise_sigma,
                        perlin=perlin) for split in splits]


def open_mosaic(task: str, bank, split: str, **noise):
    """The mosaic generator of split ``split``: ``open_mosaics`` for one split."""
    return open_mosaics(task, bank, [split], **noise)[0]


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


def prepare_openimages_bank(out_dir, *, source: str = "scikit-image", path=None, fractions=None) -> dict[str, int]:
    """Write the OpenImages split files ``{out_dir}/{train,valid,test}.hdf5``; return the split sizes.

    ``source``: ``scikit-image`` (crops of the photographs embedded in scikit-image, the
    default bank) or ``photos`` (``path``: a folder of JPEG/PNG photos, split by
    ``fractions``). The thesis files (source ``hdf5``) need no preparation: they are read
    where they are.
    """
    from equihash.data.openimages import import_photo_folder, openimages_split_sizes, prepare_embedded_bank

    if source == "scikit-image":
        prepare_embedded_bank(out_dir)
    elif source == "photos":
        if not path:
            raise InputError("bank.path: source photos needs the folder of photographs")
        import_photo_folder(path, out_dir, **({"fractions": fractions} if fractions else {}))
    elif source == "hdf5":
        raise InputError(f"bank.source hdf5: the split files in {path} are read in place, there is nothing to prepare")
    else:
        raise InputError(f"bank.source: unknown OpenImages bank source {source!r}, expected scikit-image, photos or hdf5")
    return openimages_split_sizes(out_dir)
