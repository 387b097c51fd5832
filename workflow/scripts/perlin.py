from equihash.data.perlin import generate_perlin_file
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
generate_perlin_file(snakemake.output[0], snakemake.params.fields, periods=tuple(snakemake.params.periods),
                     seed=snakemake.params.seed)
