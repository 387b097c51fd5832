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

Nothing is imported here: the workflow's definition reads ``equihash.report.runs`` without
loading matplotlib.
"""
