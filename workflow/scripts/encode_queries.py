from pathlib import Path

import torch

from equihash.encode import Encoder, encode_queries
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
db = snakemake.params.database
encoder = Encoder.for_split(snakemake.input.model, split=db["split"], device=snakemake.params.device,
                            precision=snakemake.params.precision, batch_size=snakemake.params.forward_batch,
                            **snakemake.params.data, **snakemake.params.noise)
encode_queries(encoder, Path(snakemake.input.positive_queries).parent, seed=db["seed"],
               split=db["split"], out_positive=snakemake.output.positive_queries,
               out_negative=snakemake.output.negative_queries, out_triplets=snakemake.output.triplets)
