from equihash.data.banks import prepare_mnist_bank
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
bank = snakemake.params.bank
prepare_mnist_bank(snakemake.output[0], source=bank["source"], path=bank.get("path"),
                   splits=bank.get("splits"))
