from pathlib import Path

from equihash.index.format import join_partitions
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
join_partitions(Path(snakemake.output[0]).parent, len(snakemake.input).bit_length() - 1)
