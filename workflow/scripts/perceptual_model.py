from equihash.progress import setup_logging
from equihash.train.loop import write_perceptual_model

setup_logging(snakemake.log[0])
write_perceptual_model(
    task=snakemake.wildcards.task,
    model=snakemake.wildcards.model,
    **snakemake.params.data, **snakemake.params.noise,
    params=snakemake.params.model,
    model_path=snakemake.output.model,
    eval_log_path=snakemake.output.eval_log,
)
