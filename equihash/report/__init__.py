"""Results a researcher looks at: the run summary, figures and HTML reports.

- :mod:`~equihash.report.summary`: every figure of every metrics.json in one flat table
  (``results/summary.csv`` and ``summary.md``).
- :mod:`~equihash.report.ablation`: a variant table's runs against the varied parameter,
  mean and standard deviation over seeds (docs/method.md section 6.5).
- :mod:`~equihash.report.plots`: Hamming-distance histograms of triplet pairs, the
  prioritised multi-probing curve, ablation figures (deterministic PNG bytes).
- :mod:`~equihash.report.html`: a run's metrics page for ``snakemake --report``, and
  :func:`build_report`, a self-contained HTML report of the runs that have metrics which
  names the runs that have none (``equihash report``).
"""

from equihash.report.ablation import ablation_statistics, ablation_table, configured_ablations, variant_parameters
from equihash.report.html import ReportContents, build_report, write_metrics_page
from equihash.report.runs import Ablation, MissingRunsError, Run, configured_runs, metrics_path
from equihash.report.summary import flatten_metrics, read_metrics, summarize, summarize_runs, write_summary

__all__ = [
    "Ablation", "MissingRunsError", "ReportContents", "Run", "ablation_statistics", "ablation_table",
    "build_report", "configured_ablations", "configured_runs", "flatten_metrics", "metrics_path",
    "read_metrics", "summarize", "summarize_runs", "variant_parameters", "write_metrics_page", "write_summary",
]
