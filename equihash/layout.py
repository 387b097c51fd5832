"""Where the artifacts of a run live under a results folder (docs/artifacts.md).

A *run* is one (task, model, variant, database): one metrics.json. The workflow
(``workflow/rules/common.smk``) names its outputs with :data:`LAYOUT`, and the library
finds a run's files with :class:`RunFiles` (the report, ``equihash search --run``, run
bundles), so both read the one layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from equihash.io import InputError

#: Each folder of a results folder, relative to it, with its wildcards.
LAYOUT = {
    "banks": "banks/{task}",
    "perlin": "perlin/perlin180x270.hdf5",
    "labels": "labels/{task}/{db}",
    "model": "models/{task}/{model}/{variant}",
    "fingerprints": "fingerprints/{task}/{model}/{variant}/{db}",
    "index": "index/{task}/{model}/{variant}/{db}",
    "metrics": "metrics/{task}/{model}/{variant}/{db}",
    "logs": "logs",
}
LABEL_FILES = ("database", "positive_queries", "negative_queries", "negative_pairs")
QUERY_FILES = ("positive_queries", "negative_queries", "triplets")


def template(results, name: str) -> str:
    """The path template of folder ``name`` of :data:`LAYOUT` under ``results``."""
    return f"{results}/{LAYOUT[name]}"


def bank_location(config: dict, task: str) -> str:
    """The bank a task's jobs read under ``config``: the file, or the folder of split files,
    prepared under {results}/banks/<task>, or the user's files themselves for a source read
    in place."""
    from equihash.tasks import get_task

    bank, record = config["tasks"][task]["bank"], get_task(task).bank
    if bank["source"] in record.in_place:
        return bank["path"]
    return record.location(template(config["results"], "banks").format(task=task))


def perlin_file(config: dict) -> str:
    """The Perlin noise file of a configuration: its ``perlin.path``, else the one the workflow writes."""
    return config["perlin"]["path"] or template(config["results"], "perlin")


class Run(NamedTuple):
    """One evaluated (task, model, variant, database); ``variant`` is ``main`` for a model's defaults."""

    task: str
    model: str
    variant: str
    database: str

    @property
    def name(self) -> str:
        return f"{self.task}/{self.model}/{self.variant}/{self.database}"

    @classmethod
    def parse(cls, text: str, what: str = "--run") -> "Run":
        """``TASK/MODEL/VARIANT/DATABASE`` -> Run, or InputError naming ``what``."""
        parts = str(text).split("/")
        if len(parts) != 4 or not all(parts):
            raise InputError(f"{what} '{text}': expected TASK/MODEL/VARIANT/DATABASE, e.g. "
                             "MnistMosaic/ShannonHamming/main/default")
        return cls(*parts)


class RunFiles:
    """Every file of one run under ``results``, for ``partitions`` index partitions and
    ``nb_shards`` database shards (config ``index.partitions``, ``encode.nb_shards``)."""

    def __init__(self, results, run: Run, *, partitions: int = 1, nb_shards: int = 1):
        self.results, self.run = Path(results), Run(*run)
        self.partitions, self.nb_shards = int(partitions), int(nb_shards)

    def folder(self, name: str) -> Path:
        task, model, variant, db = self.run
        return Path(template(self.results, name).format(task=task, model=model, variant=variant, db=db))

    @property
    def model(self) -> Path:
        return self.folder("model") / "model.pt"

    @property
    def eval_log(self) -> Path:
        return self.folder("model") / "eval_log.parquet"

    @property
    def training_curves(self) -> Path:
        return self.folder("model") / "training_curves.png"

    @property
    def metrics(self) -> Path:
        return self.folder("metrics") / "metrics.json"

    @property
    def run_config(self) -> Path:
        return self.folder("metrics") / "run_config.json"

    @property
    def index(self) -> Path:
        return self.folder("index")

    def labels(self) -> list[Path]:
        return [self.folder("labels") / f"{name}.parquet" for name in LABEL_FILES]

    def queries(self) -> list[Path]:
        """The fingerprints of the queries and triplets."""
        return [self.folder("fingerprints") / f"{name}.parquet" for name in QUERY_FILES]

    def shards(self) -> list[Path]:
        return [self.folder("fingerprints") / "shards" / f"{i}-of-{self.nb_shards}.parquet"
                for i in range(self.nb_shards)]

    @property
    def database(self) -> Path:
        return self.folder("fingerprints") / "database.parquet"

    def _partition_names(self) -> list[str]:
        from equihash.index.format import partition_name

        return [partition_name(v, self.partitions) for v in range(self.partitions)]

    def index_partitions(self) -> list[Path]:
        return [self.index / name for name in self._partition_names()]

    def partition_counts(self) -> list[Path]:
        return [self.folder("metrics") / "partitions" / f"{name}.parquet" for name in self._partition_names()]

    def model_files(self) -> list[Path]:
        """What training writes, and the run's figures: what a model bundle holds."""
        return [self.model, self.eval_log, self.training_curves, self.metrics, self.run_config]

    def search_files(self) -> list[Path]:
        """Besides the model: what ``equihash search`` reads (labels, query fingerprints, index)."""
        return [*self.labels(), *self.queries(), *self.index_partitions(), self.index / "partitions.json"]

    def all_files(self) -> list[Path]:
        """Every output of the run's jobs after its bank, in the order the workflow writes them."""
        return [*self.labels(), self.model, self.eval_log, self.training_curves, *self.shards(), self.database, *self.queries(),
                *self.index_partitions(), self.index / "partitions.json", *self.partition_counts(),
                self.metrics, self.run_config]
