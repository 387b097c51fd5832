from equihash.index import build_index_from_parquet
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
w = snakemake.wildcards
build_index_from_parquet(snakemake.input[0], snakemake.output[0], prefix_bits=int(w.nb_parts).bit_length() - 1,
                         prefix=int(w.part), memory_budget=snakemake.params.memory_mb << 19,  # half the job's memory
                         threads=snakemake.threads)
