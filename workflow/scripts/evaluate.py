from equihash.evaluate.run import combine_partition_files, run_provenance
from equihash.io import write_json
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
w = snakemake.wildcards
combine_partition_files(
    partitions=snakemake.input.partitions,
    positive_labels=snakemake.input.positive_labels,
    triplets=snakemake.input.triplets,
    names={"task": w.task, "model": w.model, "variant": w.variant, "database": w.db},
    out_path=snakemake.output.metrics,
    provenance=run_provenance(run_config=snakemake.params.run_config, nb_shards=snakemake.params.nb_shards),
)
write_json(snakemake.params.run_config, snakemake.output.run_config)
