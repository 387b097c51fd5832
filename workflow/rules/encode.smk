# Encoding (docs/method.md section 7): one job per database shard, their merge, queries and triplets.


rule encode_shard:
    input:
        model=f"{MODEL}/model.pt",
        data=task_data_files,
        labels=f"{LABELS}/database.parquet",
    output:
        f"{FINGERPRINTS}/shards/{{shard}}-of-{{nb_shards}}.parquet",
    params:
        database=instance_keys,
        data=task_data,
        noise=task_noise,
        device=config["encode"]["device"],
        precision=config["encode"]["precision"],
        forward_batch=config["encode"]["forward_batch"],
    threads: job_threads("encode", local=2)
    resources:
        **job_resources("encode"),
    conda:
        ENV
    log:
        f"{LOGS}/encode_shard/{{task}}/{{model}}/{{variant}}/{{db}}/{{shard}}-of-{{nb_shards}}.log",
    script:
        "../scripts/encode_shard.py"


rule merge_shards:
    input:
        database_shards,
    output:
        f"{FINGERPRINTS}/database.parquet",
    params:
        nbits=model_nbits,
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/merge_shards/{{task}}/{{model}}/{{variant}}/{{db}}.log",
    script:
        "../scripts/merge_shards.py"


rule encode_queries:
    input:
        model=f"{MODEL}/model.pt",
        data=task_data_files,
        positive_queries=f"{LABELS}/positive_queries.parquet",
        negative_queries=f"{LABELS}/negative_queries.parquet",
        negative_pairs=f"{LABELS}/negative_pairs.parquet",
    output:
        positive_queries=f"{FINGERPRINTS}/positive_queries.parquet",
        negative_queries=f"{FINGERPRINTS}/negative_queries.parquet",
        triplets=f"{FINGERPRINTS}/triplets.parquet",
    params:
        database=instance_keys,
        data=task_data,
        noise=task_noise,
        device=config["encode"]["device"],
        precision=config["encode"]["precision"],
        forward_batch=config["encode"]["forward_batch"],
    threads: job_threads("encode", local=2)
    resources:
        **job_resources("encode"),
    conda:
        ENV
    log:
        f"{LOGS}/encode_queries/{{task}}/{{model}}/{{variant}}/{{db}}.log",
    script:
        "../scripts/encode_queries.py"
