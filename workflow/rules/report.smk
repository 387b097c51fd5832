# The report (snakemake --report report.html), the run summary and the ablation figures.
# Every figure and table below is marked for the report: category = task, subcategory =
# model / variant, labels = database and figure. README "Report" says how to build it.
from equihash.report.ablation import variant_parameters


report: "../report/workflow.rst"


RUN_REPORT = f"{R}/report/{{task}}/{{model}}/{{variant}}/{{db}}"
ABLATION = f"{R}/ablations/{{task}}/{{model}}/{{table}}"


def run_labels(figure):
    return {"database": "{db}", "figure": figure}


def report_targets():
    """What rule all builds for the report: the summary and each run's report figures."""
    return [f"{R}/summary.csv", f"{R}/summary.md", f"{R}/report/summary.html"] + [
        f"{RUN_REPORT}/{name}".format(task=r.task, model=r.model, variant=r.variant, db=r.database)
        for r in RUNS
        for name in ("metrics.html", "hamming_histograms.png", "multiprobe.png")
    ]


def ablation_rows(wildcards):
    """variant -> resolved model block of one variant table."""
    return VARIANT_TABLES[(wildcards.task, wildcards.model)][wildcards.table]


def ablation_table_path(wildcards):
    return str(Path(config["variants"]) / wildcards.task / wildcards.model / f"{wildcards.table}.tsv")


rule report_run:
    # training_curves.png (rule plot_training) is an input only to mark it for the report.
    input:
        metrics=METRICS,
        training_curves=report(
            f"{MODEL}/training_curves.png",
            caption="../report/training_curves.rst",
            category="{task}",
            subcategory="{model} / {variant}",
            labels={"database": "(training)", "figure": "training curves"},
        ),
    output:
        table=report(
            f"{RUN_REPORT}/metrics.html",
            caption="../report/metrics_table.rst",
            category="{task}",
            subcategory="{model} / {variant}",
            labels=run_labels("metrics table"),
        ),
        histograms=report(
            f"{RUN_REPORT}/hamming_histograms.png",
            caption="../report/hamming_histograms.rst",
            category="{task}",
            subcategory="{model} / {variant}",
            labels=run_labels("Hamming-distance histograms"),
        ),
        multiprobe=report(
            f"{RUN_REPORT}/multiprobe.png",
            caption="../report/multiprobe.rst",
            category="{task}",
            subcategory="{model} / {variant}",
            labels=run_labels("multi-probing curve"),
        ),
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/report_run/{{task}}/{{model}}/{{variant}}/{{db}}.log",
    script:
        "../scripts/report_run.py"


rule summary:
    input:
        run_metrics(),
    output:
        csv=report(
            f"{R}/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "every figure of every run (CSV, download)"},
        ),
        markdown=f"{R}/summary.md",
        page=report(
            f"{R}/report/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "every figure of every run"},
        ),
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/summary/summary.log",
    script:
        "../scripts/summary.py"


rule ablation:
    input:
        metrics=lambda w: metrics_of(w.task, [w.model], list(ablation_rows(w))),
        eval_logs=lambda w: [f"{MODEL}/eval_log.parquet".format(task=w.task, model=w.model, variant=v)
                             for v in ablation_rows(w)],
    output:
        csv=f"{ABLATION}.csv",
        plot=report(
            f"{ABLATION}.png",
            caption="../report/ablation.rst",
            category="{task}",
            subcategory="{model} / ablations",
            labels={"database": "(all)", "figure": "ablation {table}"},
        ),
    params:
        parameters=lambda w: variant_parameters(ablation_table_path(w), ablation_rows(w)),
    wildcard_constraints:
        table="[A-Za-z0-9_]+",
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/ablation/{{task}}/{{model}}/{{table}}.log",
    script:
        "../scripts/ablation.py"


rule ablations:
    # Every variant table's figure (trains every row: expensive). One table:
    # snakemake --cores all results/ablations/MnistMosaic/ShannonHamming/shannon_weight.png
    input:
        [f"{ABLATION}.png".format(task=task, model=model, table=table)
         for (task, model), tables in VARIANT_TABLES.items() for table in tables],
