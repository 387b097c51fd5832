from equihash.progress import setup_logging
from equihash.train.curves import plot_training_curves

setup_logging(snakemake.log[0])
w = snakemake.wildcards
plot_training_curves(snakemake.input[0], snakemake.output[0], title=f"{w.task} / {w.model} / {w.variant}")
