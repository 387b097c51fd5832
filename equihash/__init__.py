"""Learning deep equihash functions: training, encoding, indexing and evaluation."""

__version__ = "0.1.0"
