# Metrics (docs/method.md section 9) and prioritised multi-probing (docs/method.md section 10):
# one job per index partition counts what its positions contribute, one job adds them up.


rule evaluate_partition:
    input:
        index_dir=INDEX_PARTITION,
        database_labels=f"{LABELS}/database.parquet",
        positive_labels=f"{LABELS}/positive_queries.parquet",
        negative_labels=f"{LABELS}/negative_queries.parquet",
        database=f"{FINGERPRINTS}/database.parquet",
        positive_queries=f"{FINGERPRINTS}/positive_queries.parquet",
        negative_queries=f"{FINGERPRINTS}/negative_queries.parquet",
    output:
        PARTITION_COUNTS,
    params:
        lookups=config["evaluate"]["multiprobe_lookups"],
        memory_mb=config["index"]["memory_mb"],
    threads: job_threads("cpu")
    resources:
        **job_resources("cpu", mem_mb=config["index"]["memory_mb"]),  # bounded per partition (docs/scale.md)
    conda:
        ENV
    log:
        f"{LOGS}/evaluate_partition/{{task}}/{{model}}/{{variant}}/{{db}}/{{part}}-of-{{nb_parts}}.log",
    script:
        "../scripts/evaluate_partition.py"


rule evaluate:
    input:
        partitions=partition_counts,
        index=f"{INDEX}/partitions.json",  # the joined index, for `equihash search`
        positive_labels=f"{LABELS}/positive_queries.parquet",
        triplets=f"{FINGERPRINTS}/triplets.parquet",
    output:
        metrics=METRICS,
        run_config=RUN_CONFIG,  # what the provenance's config_sha256 hashes, for run bundles
    params:
        run_config=run_config,
        nb_shards=config["encode"]["nb_shards"],
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/evaluate/{{task}}/{{model}}/{{variant}}/{{db}}.log",
    script:
        "../scripts/evaluate.py"
