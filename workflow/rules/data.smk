# Image banks in the thesis HDF5 format.


def bank_source(wildcards):
    bank = config["tasks"][wildcards.task]["bank"]
    return [bank["path"]] if bank.get("path") else []


rule prepare_bank:
    input:
        bank_source,
    output:
        BANK,
    params:
        bank=lambda w: bank_request(task_config(w)["bank"]),
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/prepare_bank/{{task}}.log",
    script:
        "../scripts/prepare_bank.py"
