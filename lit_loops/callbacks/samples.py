"""``GenerateSample``: now and then, continue a validation text with the model and log it.

Works with any module that has ``generate_bytes(prime, length, temperature, top_k)``. The
sample goes to the console, to ``samples.txt`` in the run folder (one block per step), and
to wandb as a text table when a WandbLogger is attached.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lit_loops.checks import check_int, check_positive_int


class GenerateSample(L.Callback):
    """Args:
    every_n_steps: generate after the validation that follows every this many steps.
    prime_len: bytes of the first validation sample used as the prompt.
    length: bytes to generate.
    temperature, top_k: sampling (temperature 0: greedy).
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        prime_len: int = 128,
        length: int = 256,
        temperature: float = 0.8,
        top_k: int | None = 32,
    ) -> None:
        check_positive_int("every_n_steps", every_n_steps)
        check_positive_int("prime_len", prime_len)
        check_int("length", length, min_value=1)
        self.every_n_steps, self.prime_len, self.length = every_n_steps, prime_len, length
        self.temperature, self.top_k = temperature, top_k
        self._last_step = -1

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        batches = trainer.datamodule.val_batches()
        prime = bytes(batches[0]["tokens"][0, : self.prime_len].tolist())
        text = pl_module.generate_bytes(prime, self.length, self.temperature, self.top_k)
        shown = (prime.decode("utf-8", "replace"), text.decode("utf-8", "replace"))
        rank_zero_info(f"[sample @ step {step}]\n{shown[0]}>>>{shown[1]}")
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "samples.txt", "a", encoding="utf-8") as f:
            f.write(f"=== step {step}\n--- prompt\n{shown[0]}\n--- generated\n{shown[1]}\n")
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_text(
                    "samples", columns=["step", "prompt", "generated"], data=[[step, *shown]]
                )
