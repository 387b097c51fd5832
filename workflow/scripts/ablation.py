from equihash.progress import setup_logging
from equihash.report.ablation import ablation_table, write_ablation_table
from equihash.report.plots import ablation_figure, save_png

setup_logging(snakemake.log[0])
w = snakemake.wildcards
variants = list(snakemake.params.parameters)  # the eval logs come in the table's row order
table = ablation_table(snakemake.input.metrics, snakemake.params.parameters,
                       dict(zip(variants, snakemake.input.eval_logs)))
write_ablation_table(table, snakemake.output.csv)
save_png(ablation_figure(table, title=f"ablation {w.task} / {w.model} / {w.table}"), snakemake.output.plot)
