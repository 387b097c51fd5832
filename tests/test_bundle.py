"""Run bundles (equihash.bundle): export, checked import, tampering, pretrained models.

The workflow side (an imported run is up to date for snakemake; a run from a pretrained
model gives the figures of the run that trained it) is in tests/test_workflow.py.
"""

import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest

from equihash.bundle import (BUILTIN_MODELS, MANIFEST, export_bundle, import_bundle, install_pretrained,
                             model_summary, pretrained_path, read_manifest)
from equihash.io import InputError, write_table
from equihash.layout import Run, RunFiles
from equihash.tasks import build_network
from equihash.train.evaluation import eval_log_table
from equihash.train.loop import save_model

RUN = Run("MnistMosaic", "ShannonHamming", "main", "default")
MODEL_CONFIG = {"task": "MnistMosaic", "model": "ShannonHamming", "nbits": 64, "noise_sigma": 0.2}


@pytest.fixture
def results(tmp_path):
    """The model files of one run (a real, untrained MnistMosaicCNN) and its figures."""
    import torch

    torch.manual_seed(0)
    files = RunFiles(tmp_path / "results", RUN)
    files.model.parent.mkdir(parents=True)
    save_model(build_network("MnistMosaic", 64), MODEL_CONFIG, files.model)
    write_table(eval_log_table([{"step": 3, "split": "valid", "recall": 0.5}]), files.eval_log)
    files.training_curves.write_bytes(b"\x89PNG not really")
    files.metrics.parent.mkdir(parents=True)
    files.metrics.write_text(json.dumps({"task": "MnistMosaic", "equidict": {"recall": 0.25}}))
    files.run_config.write_text(json.dumps({"task": "MnistMosaic"}))
    return files


def test_export_then_import_gives_the_same_bytes_in_the_same_places(results, tmp_path):
    manifest = export_bundle(results, tmp_path / "run.tar")
    assert manifest["run"] == RUN.name and manifest["model"]["nbits"] == 64 and manifest["contents"] == "model"
    assert [entry["path"] for entry in manifest["files"]] == [
        p.relative_to(results.results).as_posix() for p in results.model_files()]
    assert set(manifest["versions"]) == {"python", "equihash", "torch", "numpy", "pyarrow"}
    again = export_bundle(results, tmp_path / "again.tar")
    assert (tmp_path / "run.tar").read_bytes() == (tmp_path / "again.tar").read_bytes()  # no time, no owner
    assert again == manifest

    target = tmp_path / "elsewhere"
    import_bundle(tmp_path / "run.tar", target)
    placed = RunFiles(target, RUN)
    times = []
    for source, copy in zip(results.model_files(), placed.model_files()):
        assert copy.read_bytes() == source.read_bytes(), copy
        times.append(copy.stat().st_mtime_ns)
    assert times == sorted(times) and len(set(times)) == len(times)  # each newer than the one before
    assert not [p for p in target.iterdir() if p.name.startswith(".bundle-import")]


def rewrite(bundle, out, change):
    """A copy of ``bundle`` with ``change(name, data) -> data`` applied to each member."""
    with tarfile.open(bundle) as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as sink:
        for member in source:
            data = change(member.name, source.extractfile(member).read())
            member.size = len(data)
            sink.addfile(member, io.BytesIO(data))
    return out


def test_a_tampered_truncated_or_newer_bundle_is_refused_naming_the_file(results, tmp_path):
    bundle = tmp_path / "run.tar"
    export_bundle(results, bundle)
    target = tmp_path / "target"

    def flip(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name.endswith("eval_log.parquet") else data
    with pytest.raises(InputError, match=r"tampered.tar: models/MnistMosaic/ShannonHamming/main/eval_log.parquet: "
                                         r"\d+ bytes with sha256 \w+, the manifest says"):
        import_bundle(rewrite(bundle, tmp_path / "tampered.tar", flip), target)
    assert not target.exists() or not any(target.rglob("*.parquet"))  # nothing placed

    data = bundle.read_bytes()
    (tmp_path / "short.tar").write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match=r"short.tar: .*(truncated|not in the archive)"):
        import_bundle(tmp_path / "short.tar", target)
    assert not any(target.rglob("*.pt"))

    def newer(name, data):
        return json.dumps({**json.loads(data), "version": 2}).encode() if name == MANIFEST else data
    with pytest.raises(InputError, match="newer.tar: manifest.json 'version' is 2; this equihash reads version 1"):
        read_manifest(rewrite(bundle, tmp_path / "newer.tar", newer))

    extra = rewrite(bundle, tmp_path / "extra.tar", lambda name, data: data)
    with tarfile.open(extra, "a") as tar:
        member = tarfile.TarInfo("models/MnistMosaic/ShannonHamming/main/evil.py")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"bad"))
    with pytest.raises(InputError, match="member 'models/MnistMosaic/ShannonHamming/main/evil.py' is not a file of"):
        import_bundle(extra, target)


def test_export_names_the_file_a_run_lacks(results, tmp_path):
    results.metrics.unlink()
    with pytest.raises(InputError, match="metrics.json: not found; run MnistMosaic/ShannonHamming/main/default"):
        export_bundle(results, tmp_path / "run.tar")


def test_install_pretrained_checks_each_field_and_takes_the_bundles_log(results, tmp_path):
    bundle = tmp_path / "run.tar"
    export_bundle(results, bundle)
    out = tmp_path / "out"
    out.mkdir()
    install_pretrained(bundle, expected=MODEL_CONFIG, model_path=out / "model.pt", eval_log_path=out / "log.parquet")
    assert (out / "model.pt").read_bytes() == results.model.read_bytes()
    assert (out / "log.parquet").read_bytes() == results.eval_log.read_bytes()
    install_pretrained(results.model, expected=MODEL_CONFIG, model_path=out / "bare.pt", eval_log_path=out / "bare.parquet")
    assert pq.read_table(out / "bare.parquet").num_rows == 0  # a bare model file has no evaluations
    for key, value in (("nbits", 32), ("task", "OpenImagesMosaic"), ("network", {"depth": 18}),
                       ("noise_sigma", 0.3)):
        with pytest.raises(InputError, match=f"run.tar: the model's '{key}' is .*, the model block's run needs"):
            install_pretrained(bundle, expected={**MODEL_CONFIG, key: value}, model_path=out / "x.pt",
                               eval_log_path=out / "x.parquet")
    with pytest.raises(InputError, match="nowhere.pt: pretrained model not found"):
        install_pretrained(tmp_path / "nowhere.pt", expected=MODEL_CONFIG, model_path=out / "x.pt",
                           eval_log_path=out / "x.parquet")


def test_the_builtin_mnist_model_is_a_checked_bundle_under_5_mb(tmp_path):
    path = pretrained_path("builtin:mnist")
    assert set(BUILTIN_MODELS) == {"mnist"} and path.is_file()
    assert path.stat().st_size <= 5 * 2**20
    manifest = read_manifest(path)
    assert manifest["run"].startswith("MnistMosaic/ShannonHamming/")
    assert manifest["model"] == {"task": "MnistMosaic", "model": "ShannonHamming", "nbits": 64, "network": None,
                                 "noise_sigma": 0.2}
    import_bundle(path, tmp_path)  # every checksum holds
    placed = RunFiles(tmp_path, Run.parse(manifest["run"]))
    assert model_summary(placed.model)["task"] == "MnistMosaic"
    assert json.loads(placed.metrics.read_text())["equidict"]["recall"] > 0.2
    with pytest.raises(InputError, match="'builtin:nope' names no built-in model; expected one of builtin:mnist"):
        pretrained_path("builtin:nope")


def test_a_file_that_is_not_a_bundle_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not a readable bundle"):
        read_manifest(tmp_path / "notes.txt")
    with tarfile.open(tmp_path / "plain.tar", "w") as tar:
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    with pytest.raises(InputError, match="plain.tar: the first member must be manifest.json; not an equihash bundle"):
        read_manifest(tmp_path / "plain.tar")
