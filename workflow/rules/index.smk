# The inverted index (docs/method.md section 8): fingerprint -> database positions, cut by
# key prefix into index.partitions partitions, one bounded job each, then joined by a manifest.


rule index:
    input:
        f"{FINGERPRINTS}/database.parquet",
    output:
        directory(INDEX_PARTITION),
    params:
        memory_mb=config["index"]["memory_mb"],
    threads: job_threads("cpu")
    resources:
        **job_resources("cpu", mem_mb=config["index"]["memory_mb"]),  # bounded per partition (docs/scale.md)
    conda:
        ENV
    log:
        f"{LOGS}/index/{{task}}/{{model}}/{{variant}}/{{db}}/{{part}}-of-{{nb_parts}}.log",
    script:
        "../scripts/index.py"


rule join_index:
    input:
        index_partitions,
    output:
        f"{INDEX}/partitions.json",
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/join_index/{{task}}/{{model}}/{{variant}}/{{db}}.log",
    script:
        "../scripts/join_index.py"
