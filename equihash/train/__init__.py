"""Training objectives (one module each), the training loop and evaluation during training."""
