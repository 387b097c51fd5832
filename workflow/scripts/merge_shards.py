from equihash.encode import merge_shards
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
merge_shards(snakemake.input, snakemake.output[0], nbytes=snakemake.params.nbits // 8)
