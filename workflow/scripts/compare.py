from equihash.evaluate.compare import write_comparison
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
write_comparison(snakemake.input, snakemake.output.csv, snakemake.output.markdown)
