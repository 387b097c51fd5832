"""Run bundles: one archive of a trained run, to publish it and to reuse it elsewhere.

A bundle is an uncompressed tar archive (``.tar``) whose first member is ``manifest.json``:
{"format": "equihash-bundle", "version": 1, "run": "TASK/MODEL/VARIANT/DB", "contents":
"model" | "search" | "run", "model": {task, model, nbits, network, noise_sigma of the
model file}, "files": [{"path", "bytes", "sha256"}, ...], "versions": {python, equihash,
torch, numpy, pyarrow}}. The other members are the files of ``files``, in that order, at
their paths relative to the results folder (``equihash.layout``):

* ``model``: model.pt, eval_log.parquet, training_curves.png, metrics.json and
  run_config.json (the run's resolved configuration, whose sha256 is the provenance's
  ``config_sha256``);
* ``search``: also the labels, the query fingerprints and the index, what ``equihash
  search --run`` reads;
* ``run``: every output of the run's jobs after its bank (database shards and partition
  counts included), so that ``snakemake -n`` sees the imported run as up to date.

:func:`import_bundle` reads the whole archive into a staging folder beside the results,
checking the manifest's format and version and every file's size and sha256 (a member
missing, unlisted, truncated or changed is an InputError naming it), and only then moves
the files into place, in the manifest's order with increasing modification times, so that
each output is newer than what the workflow made it from. The checksums catch a changed,
lost or added byte, not a forger who rewrites the manifest to match (bundles carry no
signature: take them from sources you trust, as with any model file).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

from equihash.io import InputError, atomic_path
from equihash.layout import Run, RunFiles

BUNDLE_FORMAT = "equihash-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
CONTENTS = ("model", "search", "run")
BLOCK = 1 << 20


def _versions() -> dict:
    import numpy
    import pyarrow
    import torch

    import equihash

    return {"python": sys.version.split()[0], "equihash": equihash.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "pyarrow": pyarrow.__version__}


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def model_config(model_path) -> dict:
    """The resolved configuration a model file records (task, model, nbits, task settings, training settings)."""
    import torch

    try:
        return dict(torch.load(model_path, map_location="cpu", weights_only=True)["config"])
    except Exception as exc:
        raise InputError(f"{model_path}: not a valid equihash model file ({exc})") from None


def model_summary(model_path) -> dict:
    """What a model file says about the model it holds: task, model, nbits, network and noise."""
    config = model_config(model_path)
    return {key: config.get(key) for key in ("task", "model", "nbits", "network", "noise_sigma")}


def bundle_files(files: RunFiles, contents: str) -> tuple[list[Path], list[Path]]:
    """The files a bundle of ``contents`` holds, in the workflow's order (folders expanded),
    and the folders among them (outputs that are folders: the index partitions)."""
    if contents not in CONTENTS:
        raise InputError(f"contents '{contents}': expected one of {', '.join(CONTENTS)}")
    kept = {"model": files.model_files(), "search": files.model_files() + files.search_files(),
            "run": files.all_files()}[contents]
    wanted = [path for path in files.all_files() if path in kept]  # the workflow's order
    out, folders = [], []
    for path in wanted:
        if path.is_dir():
            folders.append(path)
            out.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(f"{path}: not found; run {files.run.name} holds no such file yet (run the "
                             "pipeline for it first, or export fewer contents)")
    return out, folders


def export_bundle(files: RunFiles, out_path, *, contents: str = "model") -> dict:
    """Write the bundle of a run's ``contents`` to ``out_path`` (atomically); return its manifest."""
    paths, folders = bundle_files(files, contents)
    entries = [{"path": path.relative_to(files.results).as_posix(), "bytes": path.stat().st_size,
                "sha256": file_sha256(path)} for path in paths]
    manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "run": files.run.name, "contents": contents,
                "model": model_summary(files.model), "files": entries,
                "folders": [folder.relative_to(files.results).as_posix() for folder in folders],
                "versions": _versions()}
    text = (json.dumps(manifest, indent=2) + "\n").encode()

    def info(name: str, size: int) -> tarfile.TarInfo:
        member = tarfile.TarInfo(name)  # fixed owner and time: equal runs, equal bundles
        member.size, member.mtime, member.mode = size, 0, 0o644
        return member

    with atomic_path(out_path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info(MANIFEST, len(text)), io.BytesIO(text))
        for path, entry in zip(paths, entries):
            with open(path, "rb") as handle:
                tar.addfile(info(entry["path"], entry["bytes"]), handle)
    return manifest


def _safe(name: str, bundle) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise InputError(f"{bundle}: member '{name}' has an unsafe path; expected one relative to a results folder")
    return path


def read_manifest(bundle) -> dict:
    """The checked manifest of a bundle (its first member)."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise InputError(f"{bundle}: bundle not found")
    try:
        with tarfile.open(bundle, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST:
                raise InputError(f"{bundle}: the first member must be {MANIFEST}; not an equihash bundle")
            manifest = json.loads(tar.extractfile(first).read())
    except InputError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{bundle}: not a readable bundle ({exc}); truncated, or not a bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{bundle}: {MANIFEST} 'format' must be '{BUNDLE_FORMAT}'")
    if manifest.get("version") != BUNDLE_VERSION:
        raise InputError(f"{bundle}: {MANIFEST} 'version' is {manifest.get('version')!r}; this equihash reads "
                         f"version {BUNDLE_VERSION} (export the run again with this version)")
    try:
        Run.parse(manifest["run"], f"{bundle}: {MANIFEST} 'run'")
        for entry in manifest["files"]:
            _safe(entry["path"], bundle)
            int(entry["bytes"]), str(entry["sha256"])
        for folder in manifest["folders"]:
            _safe(folder, bundle)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{bundle}: {MANIFEST} must hold 'run', 'files' [{{path, bytes, sha256}}, ...] and "
                         "'folders'") from None
    return manifest


def extract_bundle(bundle, folder) -> dict:
    """Every file of a bundle under ``folder`` (its paths kept), each checked against the
    manifest; return the manifest. On a failed check ``folder`` holds what was read before
    it: the callers extract into a temporary folder and remove it."""
    bundle, folder = Path(bundle), Path(folder)
    manifest = read_manifest(bundle)
    expected = {entry["path"]: entry for entry in manifest["files"]}
    seen = set()
    try:
        with tarfile.open(bundle, "r:") as tar:
            for position, member in enumerate(tar):
                if position == 0:  # the manifest, read above
                    continue
                name = _safe(member.name, bundle).as_posix()
                entry = expected.get(name)
                if entry is None or not member.isfile() or name in seen:
                    raise InputError(f"{bundle}: member '{name}' is not a file of its {MANIFEST} (or a repeated one)")
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest, size = hashlib.sha256(), 0
                with tar.extractfile(member) as source, open(target, "wb") as sink:
                    while block := source.read(BLOCK):
                        digest.update(block)
                        sink.write(block)
                        size += len(block)
                if size != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
                    raise InputError(f"{bundle}: {name}: {size} bytes with sha256 {digest.hexdigest()}, the "
                                     f"manifest says {entry['bytes']} bytes with sha256 {entry['sha256']}; the "
                                     "bundle was changed or damaged")
                seen.add(name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{bundle}: not a readable bundle ({exc}); truncated or damaged") from None
    missing = [name for name in expected if name not in seen]
    if missing:
        raise InputError(f"{bundle}: {missing[0]} is in the manifest but not in the archive"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") + "; truncated bundle")
    return manifest


def import_bundle(bundle, results, *, before_placing=None) -> dict:
    """Check a bundle and place its files under ``results`` (replacing the run's files and
    folders it holds); return its manifest. Each file gets a modification time later
    than the one before it, in the manifest's order, so that Snakemake sees every output
    newer than its inputs; ``before_placing(manifest)`` runs once every file is checked
    and before any is placed (``equihash bundle import`` prepares the run's bank there, so
    that the bank is older than what was made from it). A bundle that fails a check
    leaves nothing behind."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-import-", dir=results))
    try:
        manifest = extract_bundle(bundle, staging)
        if before_placing is not None:
            before_placing(manifest)
        names = [entry["path"] for entry in manifest["files"]]
        folders = [PurePosixPath(folder) for folder in manifest["folders"]]
        for folder in folders:  # folder outputs are replaced whole, never merged with a stale one
            shutil.rmtree(results / folder, ignore_errors=True)
        start = time.time()
        for i, name in enumerate(names):
            target = results / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target)
            stamp = start + 0.01 * (i + 1)
            os.utime(target, (stamp, stamp))
            for folder in folders:  # a folder output is as new as its newest file
                if PurePosixPath(name).is_relative_to(folder):
                    os.utime(results / folder, (stamp, stamp))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def bundle_model(path, folder) -> Path:
    """The model.pt of ``path``: the file itself, or the model.pt of a bundle, checked and
    extracted under ``folder``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pretrained model not found (expected a model.pt or a bundle)")
    if not tarfile.is_tarfile(path):
        return path
    manifest = extract_bundle(path, folder)
    model = [entry["path"] for entry in manifest["files"] if PurePosixPath(entry["path"]).name == "model.pt"]
    if len(model) != 1:
        raise InputError(f"{path}: a bundle holds one model.pt; this one holds {len(model)}")
    return Path(folder) / model[0]


#: The models the package ships (``pretrained: builtin:NAME``): bundles under equihash/pretrained/.
BUILTIN_MODELS = {"mnist": "mnist.tar"}
BUILTIN_PREFIX = "builtin:"


def pretrained_path(source: str) -> Path:
    """The file of a model block's ``pretrained:``: a path, or ``builtin:NAME`` for a model the
    package ships (:data:`BUILTIN_MODELS`)."""
    source = str(source)
    if not source.startswith(BUILTIN_PREFIX):
        return Path(source)
    name = source[len(BUILTIN_PREFIX):]
    if name not in BUILTIN_MODELS:
        raise InputError(f"pretrained: '{source}' names no built-in model; expected one of "
                         f"{', '.join(BUILTIN_PREFIX + key for key in BUILTIN_MODELS)}")
    return Path(__file__).resolve().parent / "pretrained" / BUILTIN_MODELS[name]


def install_pretrained(source, *, expected: dict, model_path, eval_log_path) -> None:
    """Take a run's model from ``source`` (a model.pt or a bundle) instead of training it:
    every key of ``expected`` (task, model, nbits, network, the task's noise settings) must
    equal the model file's, else an InputError naming the field; then model.pt is copied
    to ``model_path`` and the training's evaluation log (the bundle's; none for a bare
    model file: an empty log) to ``eval_log_path``."""
    from equihash.io import write_table
    from equihash.train.evaluation import eval_log_table

    source = Path(source)
    with tempfile.TemporaryDirectory() as folder:
        model = bundle_model(source, folder)
        recorded = model_config(model)
        for key, value in expected.items():
            if recorded.get(key) != value:
                raise InputError(f"pretrained: {source}: the model's '{key}' is {recorded.get(key)!r}, the model "
                                 f"block's run needs {value!r}")
        with atomic_path(model_path) as tmp:
            shutil.copyfile(model, tmp)
        log = model.parent / "eval_log.parquet"
        if model != source and log.is_file():  # a bundle's log; a bare model file brings none
            with atomic_path(eval_log_path) as tmp:
                shutil.copyfile(log, tmp)
        else:
            write_table(eval_log_table([]), eval_log_path)
