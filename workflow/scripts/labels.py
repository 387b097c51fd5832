from pathlib import Path

from equihash.data.labels import write_labels
from equihash.progress import setup_logging
from equihash.tasks import get_task

setup_logging(snakemake.log[0])
db = snakemake.params.database
task = snakemake.wildcards.task
write_labels(
    Path(snakemake.output.database).parent,
    bank_size=get_task(task).bank.split_sizes(snakemake.params.bank)[db["split"]],
    m=get_task(task).cells,
    n_database=db["size"],
    n_positive=db["positive_queries"],
    n_negative=db["negative_queries"],
    n_pairs=db["negative_pairs"],
    seed=db["seed"],
    split=db["split"],
)
