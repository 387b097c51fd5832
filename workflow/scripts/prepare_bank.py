from equihash.progress import setup_logging
from equihash.tasks import prepare_bank

setup_logging(snakemake.log[0])
prepare_bank(snakemake.wildcards.task, snakemake.params.location, **snakemake.params.bank)
