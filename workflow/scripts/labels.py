from pathlib import Path

from equihash.data.labels import write_labels
from equihash.data.mosaic import task_class
from equihash.data.tasks import bank_split_sizes
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
db = snakemake.params.database
task = snakemake.wildcards.task
write_labels(
    Path(snakemake.output.database).parent,
    bank_size=bank_split_sizes(task, snakemake.params.bank)[db["split"]],
    m=task_class(task).cells,
    n_database=db["size"],
    n_positive=db["positive_queries"],
    n_negative=db["negative_queries"],
    n_pairs=db["negative_pairs"],
    seed=db["seed"],
    split=db["split"],
)
