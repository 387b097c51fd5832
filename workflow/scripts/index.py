from equihash.index import InvertedIndex
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
InvertedIndex.build_parquet(snakemake.input[0], snakemake.output[0])
