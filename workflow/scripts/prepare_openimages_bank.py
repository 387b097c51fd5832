from pathlib import Path

from equihash.data.tasks import prepare_openimages_bank
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
prepare_openimages_bank(Path(snakemake.output[0]).parent, **snakemake.params.bank)
