# Metrics (docs/method.md section 9) and prioritised multi-probing (docs/method.md section 10).


rule evaluate:
    input:
        index_dir=INDEX,
        database_labels=f"{LABELS}/database.parquet",
        positive_labels=f"{LABELS}/positive_queries.parquet",
        negative_labels=f"{LABELS}/negative_queries.parquet",
        database=f"{FINGERPRINTS}/database.parquet",
        positive_queries=f"{FINGERPRINTS}/positive_queries.parquet",
        negative_queries=f"{FINGERPRINTS}/negative_queries.parquet",
        triplets=f"{FINGERPRINTS}/triplets.parquet",
    output:
        METRICS,
    params:
        lookups=config["evaluate"]["multiprobe_lookups"],
        run_config=run_config,
        nb_shards=config["encode"]["nb_shards"],
    resources:
        **job_resources("cpu"),
    conda:
        ENV
    log:
        f"{LOGS}/evaluate/{{task}}/{{model}}/{{variant}}/{{db}}.log",
    script:
        "../scripts/evaluate.py"
