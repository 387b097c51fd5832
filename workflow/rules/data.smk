# Image banks (docs/method.md section 2), the Perlin noise file (docs/method.md section 3) and pictures of the mosaics.


def bank_source(wildcards):
    bank = config["tasks"][wildcards.task]["bank"]
    return [bank["path"]] if bank.get("path") else []


# A task's bank from its configured source, in the format of its record (equihash.tasks):
# one file (rule prepare_bank) or one file per split (rule prepare_split_bank). The sources
# read in place (the thesis OpenImages split files) have no job: bank_location is the user's.
rule prepare_bank:
    input:
        bank_source,
    output:
        f"{BANKS}/bank.hdf5",
    params:
        bank=lambda w: bank_request(task_config(w)["bank"]),
        location=lambda w, output: output[0],
    wildcard_constraints:
        task=tasks_keeping_banks(single_file=True),
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/prepare_bank/{{task}}.log",
    script:
        "../scripts/prepare_bank.py"


rule prepare_split_bank:
    input:
        bank_source,
    output:
        [f"{BANKS}/{split}.hdf5" for split in ("train", "valid", "test")],
    params:
        bank=lambda w: bank_request(task_config(w)["bank"]),
        location=lambda w, output: str(Path(output[0]).parent),
    wildcard_constraints:
        task=tasks_keeping_banks(single_file=False),
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/prepare_bank/{{task}}.log",
    script:
        "../scripts/prepare_bank.py"


rule perlin:
    output:
        PERLIN,
    params:
        fields=config["perlin"]["fields"],
        periods=config["perlin"]["periods"],
        seed=config["perlin"]["seed"],
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/perlin.log",
    script:
        "../scripts/perlin.py"


rule mosaic_examples:
    input:
        task_data_files,
    output:
        report(
            f"{R}/mosaics/{{task}}/examples.png",
            caption="../report/mosaic_examples.rst",
            category="{task}",
            subcategory="Mosaics",
        ),
    params:
        data=task_data,
        noise=task_noise,
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/mosaic_examples/{{task}}.log",
    script:
        "../scripts/mosaic_examples.py"
