from equihash.data.examples import mosaic_examples, write_png
from equihash.tasks import open_mosaic
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
mosaic = open_mosaic(snakemake.wildcards.task, split="test", **snakemake.params.data, **snakemake.params.noise)
write_png(snakemake.output[0], mosaic_examples(mosaic, count=8, seed=0))
