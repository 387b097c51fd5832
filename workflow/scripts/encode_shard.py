import torch

from equihash.encode import Encoder, encode_database_shard
from equihash.progress import setup_logging

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
db = snakemake.params.database
encoder = Encoder.for_split(snakemake.input.model, split=db["split"], device=snakemake.params.device,
                            precision=snakemake.params.precision, batch_size=snakemake.params.forward_batch,
                            **snakemake.params.data, **snakemake.params.noise)
encode_database_shard(encoder, snakemake.input.labels, seed=db["seed"], split=db["split"],
                      shard=int(snakemake.wildcards.shard),
                      nb_shards=int(snakemake.wildcards.nb_shards), out_path=snakemake.output[0])
