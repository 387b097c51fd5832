from equihash.evaluate.run import evaluate_partition_files
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
evaluate_partition_files(**dict(snakemake.input.items()), lookups=snakemake.params.lookups,
                         out_path=snakemake.output[0], memory_budget=snakemake.params.memory_mb << 19,  # half the job's
                         threads=snakemake.threads)
