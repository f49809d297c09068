"""One folder per experiment: data.py (DataModule + generator) and module.py (LightningModule)."""
