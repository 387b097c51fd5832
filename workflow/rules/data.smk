# Image banks (docs/method.md section 2), the Perlin noise file (docs/method.md section 3) and pictures of the mosaics.


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
    wildcard_constraints:
        task="MnistMosaic",
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/prepare_bank/{{task}}.log",
    script:
        "../scripts/prepare_bank.py"


# The OpenImages split files from the photographs embedded in scikit-image or from a folder
# of the user's photos. The thesis files (source hdf5) are read where they are, no rule.
rule prepare_openimages_bank:
    output:
        [f"{OPENIMAGES_BANK}/{split}.hdf5" for split in SPLITS],
    params:
        bank=lambda w: bank_request(config["tasks"]["OpenImagesMosaic"]["bank"]),
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/prepare_bank/OpenImagesMosaic.log",
    script:
        "../scripts/prepare_openimages_bank.py"


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
