from equihash.progress import setup_logging
from equihash.report.html import write_summary_page
from equihash.report.summary import summarize_runs

setup_logging(snakemake.log[0])
table = summarize_runs(snakemake.input, snakemake.output.csv, snakemake.output.markdown)
write_summary_page(table, snakemake.output.page)
