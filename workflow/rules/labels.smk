# Database, query and triplet labels (docs/method.md section 4).


rule labels:
    input:
        bank=bank_files,
    output:
        database=f"{LABELS}/database.parquet",
        positive_queries=f"{LABELS}/positive_queries.parquet",
        negative_queries=f"{LABELS}/negative_queries.parquet",
        negative_pairs=f"{LABELS}/negative_pairs.parquet",
    params:
        database=database_config,
        bank=lambda w, input: bank_location(config, w.task),  # the input files' location (derived: not compared)
    resources:
        **job_resources("cpu"),
    conda:
        ENV
    log:
        f"{LOGS}/labels/{{task}}/{{db}}.log",
    script:
        "../scripts/labels.py"
