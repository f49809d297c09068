"""``GenerateSample``: now and then, continue a validation sample with the model and log it.

Works with every module that generates; the interface it needs:

* the DataModule's ``val_batches()`` (the fixed validation set): the prompt comes from
  its first batch;
* the LightningModule's ``sample_prompt(batch, length) -> (1, P)`` (the first row's first
  terms, at most ``length``), ``generate(prompt, max_new_tokens, strategy=...,
  temperature=..., top_k=...) -> (1, P + max_new_tokens)`` (``lit_loops.nn.sampling``)
  and ``decode(tokens: list[int]) -> str``.

The sample goes to the console, to ``samples.txt`` in the run folder (one block per step),
and to wandb as a text table when a WandbLogger is attached.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lit_loops.checks import check, check_choice, check_float, check_int, check_positive_int
from lit_loops.nn.sampling import STRATEGIES

NEEDS = ("sample_prompt", "generate", "decode")


class GenerateSample(L.Callback):
    """Args:
    every_n_steps: generate after the validation that follows every this many steps.
    prompt_len: terms (bytes, numbers) of the first validation sample used as the prompt.
    length: terms to generate.
    strategy, temperature, top_k: decoding (``lit_loops.nn.sampling``).
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        prompt_len: int = 128,
        length: int = 256,
        strategy: str = "sample",
        temperature: float = 0.8,
        top_k: int | None = 32,
    ) -> None:
        check_positive_int("every_n_steps", every_n_steps)
        check_positive_int("prompt_len", prompt_len)
        check_int("length", length, min_value=1)
        check_choice("strategy", strategy, STRATEGIES)
        check_float("temperature", temperature, 0.0)
        if top_k is not None:
            check_positive_int("top_k", top_k)
        self.every_n_steps, self.prompt_len, self.length = every_n_steps, prompt_len, length
        self.sampling = {"strategy": strategy, "temperature": temperature, "top_k": top_k}
        self._last_step = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        missing = [name for name in NEEDS if not hasattr(pl_module, name)]
        check(
            not missing and hasattr(trainer.datamodule, "val_batches"),
            "GenerateSample",
            type(pl_module).__name__,
            f"needs a module with {', '.join(NEEDS)} (missing: {', '.join(missing) or '-'}) "
            "and a DataModule with val_batches()",
        )

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        batch = trainer.datamodule.val_batches()[0]
        prompt = pl_module.sample_prompt(batch, self.prompt_len).to(pl_module.device)
        with torch.no_grad():
            out = pl_module.generate(prompt, self.length, **self.sampling)
        P = prompt.shape[1]
        shown = (pl_module.decode(prompt[0].tolist()), pl_module.decode(out[0, P:].tolist()))
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
