from equihash.progress import setup_logging
from equihash.report.html import write_metrics_page
from equihash.report.plots import hamming_histogram_figure, multiprobe_figure, save_png
from equihash.report.summary import read_metrics

setup_logging(snakemake.log[0])
doc = read_metrics(snakemake.input.metrics)
write_metrics_page(snakemake.input.metrics, snakemake.output.table)
save_png(hamming_histogram_figure(doc), snakemake.output.histograms)
save_png(multiprobe_figure(doc), snakemake.output.multiprobe)
