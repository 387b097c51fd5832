# The inverted index (docs/method.md section 8): fingerprint -> database positions.


rule index:
    input:
        f"{FINGERPRINTS}/database.parquet",
    output:
        directory(INDEX),
    resources:
        **job_resources("cpu"),
    conda:
        ENV
    log:
        f"{LOGS}/index/{{task}}/{{model}}/{{variant}}/{{db}}.log",
    script:
        "../scripts/index.py"
