from equihash.bundle import install_pretrained
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
install_pretrained(snakemake.input[0], expected=snakemake.params.expected, model_path=snakemake.output.model,
                   eval_log_path=snakemake.output.eval_log)
