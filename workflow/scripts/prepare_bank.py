from equihash.data.banks import prepare_mnist_bank
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
prepare_mnist_bank(snakemake.output[0], **snakemake.params.bank)
