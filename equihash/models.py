"""The models a configuration names: the learned models, each trained with one of the
thesis objectives (``equihash.train``), and the fixed perceptual hashes
(``equihash.nn.perceptual``), with the width of their fingerprints.

This module imports nothing heavy, so that the workflow's definition (the Snakefile, which
loads on every ``snakemake`` call and inside every cluster job) needs no torch.
"""

#: Learned model -> the objective it trains with (a key of ``equihash.train.loop.OBJECTIVES``).
#: A model is named as in the thesis: PseudoSH and SHQuad are ShannonHamming with other
#: objective settings.
MODEL_OBJECTIVE = {"ShannonHamming": "ShannonHamming", "HashNet": "HashNet", "JMLH": "JMLH",
                   "HashNetShannon": "HashNetShannon", "PseudoSH": "ShannonHamming", "SHQuad": "ShannonHamming"}

#: Perceptual hash -> bits of its fingerprint.
HASH_BITS = {"pHash": 64, "dHash": 64, "aHash": 64, "wHash": 64, "PDQ": 256}
