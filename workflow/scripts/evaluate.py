from equihash.evaluate.run import evaluate_run, run_provenance
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
w = snakemake.wildcards
evaluate_run(
    **dict(snakemake.input.items()),
    lookups=snakemake.params.lookups,
    names={"task": w.task, "model": w.model, "variant": w.variant, "database": w.db},
    out_path=snakemake.output[0],
    provenance=run_provenance(run_config=snakemake.params.run_config, nb_shards=snakemake.params.nb_shards),
)
