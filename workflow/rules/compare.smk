# The thesis comparison (the models of compare.models that a task defines, side by side) and one target rule per variant table.


rule compare_task:
    input:
        lambda w: metrics_of(w.task, compared_models(config, w.task)),
    output:
        csv=f"{R}/compare/{{task}}/comparison.csv",
        markdown=f"{R}/compare/{{task}}/comparison.md",
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/compare/{{task}}.log",
    script:
        "../scripts/compare.py"


rule compare:
    input:
        [f"{R}/compare/{task}/comparison.csv" for task in config["run_tasks"]],


for (_task, _model), _tables in VARIANT_TABLES.items():
    for _table, _rows in _tables.items():

        rule:
            name:
                f"variants_{_task}_{_model}_{_table}"
            input:
                metrics_of(_task, [_model], list(_rows)),

