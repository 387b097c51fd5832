# equihash: train, encode, index and evaluate deep equihash functions (the thesis).
# snakemake --cores all            the default run (config/config.yaml)
# snakemake -n                     what would run, and why
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("8.0")


# The defaults; a --configfile is merged on top of them key by key.
configfile: Path(workflow.basedir) / "config" / "config.yaml"


validate(config, "config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
        report_targets(),
    default_target: True
