"""compressor: make trained PyTorch models smaller and faster for edge GPUs, and prove it."""

__version__ = "0.1.0"
