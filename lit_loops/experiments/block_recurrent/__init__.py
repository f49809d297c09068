"""Byte-level language modelling with a Block-Recurrent Transformer."""
