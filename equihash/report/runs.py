"""Runs for the report and the summary; where their artifacts live is ``equihash.layout``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from equihash.io import InputError
from equihash.layout import Run, RunFiles


@dataclass
class Ablation:
    """A variant table to plot (docs/method.md section 6.5): variant -> {varied key: value} of its rows
    (``equihash.report.ablation.variant_parameters``) and the databases its runs were
    evaluated on; its runs are every (variant, database)."""

    task: str
    model: str
    table: str
    parameters: dict
    databases: tuple = ("default",)

    @property
    def runs(self) -> list[Run]:
        return [Run(self.task, self.model, variant, db) for variant in self.parameters for db in self.databases]


def metrics_path(results, run: Run) -> Path:
    return RunFiles(results, run).metrics


def eval_log_path(results, run: Run) -> Path:
    return RunFiles(results, run).eval_log


def training_curves_path(results, run: Run) -> Path:
    return RunFiles(results, run).training_curves


def configured_runs(config: dict) -> list[Run]:
    """The runs that ``snakemake`` (rule all) evaluates: for each task of ``run_tasks`` (every
    task of a configuration without that key), its ``run_models`` (variant ``main``) on each
    of its databases, in configuration order."""
    try:
        tasks = config.get("run_tasks", list(config["tasks"]))
        return [Run(task, model, "main", database)
                for task in tasks
                for model in config["tasks"][task]["run_models"]
                for database in config["tasks"][task]["databases"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"configuration: expected tasks.<task>.run_models and tasks.<task>.databases "
                         f"for each task of run_tasks ({type(exc).__name__}: {exc})") from None


class MissingRunsError(InputError):
    """Runs asked for that have no metrics.json. ``missing`` lists (run, expected path);
    ``report_path`` is the report written for the other runs, or None when none was."""

    def __init__(self, missing: list[tuple[Run, Path]], report_path: Path | None = None):
        self.missing, self.report_path = list(missing), report_path
        lines = [f"  {run.name}: expected {path}" for run, path in self.missing]
        if report_path is None:
            head = f"no report written: none of the {len(self.missing)} runs asked for has metrics"
        else:
            head = (f"report written to {report_path} without {len(self.missing)} run(s) that have "
                    "no metrics (run the pipeline for them first)")
        super().__init__(head + ":\n" + "\n".join(lines))


def split_by_presence(runs, results) -> tuple[list[Run], list[tuple[Run, Path]]]:
    """(runs whose metrics.json exists, [(run, expected path) for the others]), order kept."""
    present, missing = [], []
    for run in runs:
        run = Run(*run)
        path = metrics_path(results, run)
        if path.is_file():
            present.append(run)
        else:
            missing.append((run, path))
    return present, missing
