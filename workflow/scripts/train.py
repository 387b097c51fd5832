import torch

from equihash.progress import setup_logging
from equihash.train.loop import train_model

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
train_model(
    task=snakemake.wildcards.task,
    model=snakemake.wildcards.model,
    **snakemake.params.data, **snakemake.params.noise,
    network=snakemake.params.network,
    nbits=snakemake.params.nbits,
    params=snakemake.params.model,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    model_path=snakemake.output.model,
    eval_log_path=snakemake.output.eval_log,
)
