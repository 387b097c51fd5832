from equihash.index import build_index_from_parquet
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
build_index_from_parquet(snakemake.input[0], snakemake.output[0])
