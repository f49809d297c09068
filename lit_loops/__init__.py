"""lit_loops: PyTorch Lightning experiments on transformers that learn algorithms."""

__version__ = "0.1.0"
