"""The in-context learning LightningModule: a GPT-2-style causal transformer, standard or
looped, reads a prompt ``x_1, y_1, ..., x_n, y_n`` and predicts every ``y_i`` at the
position of ``x_i``.

Standard (Garg et al.): linear read-in from ``d``, learned positions, ``n_layers`` pre-LN
GELU blocks, final LayerNorm, linear read-out to 1.

Looped (Yang et al.): the same with ``n_layers`` (default 1) blocks + final LayerNorm as
the loop body, applied ``b = loops`` times with input injection, ``z_{t+1} = f(z_t + e)``,
``z_0 = 0``. The training loss averages the squared errors of the read-outs of the last
``loop_window = T`` loops (loops ``b-T+1 .. b``); the loops before run without gradient.
``b`` follows a curriculum (``loops_start`` -> ``loops``, ``+loops_increment`` every
``loops_every`` steps); at test time any loop count works (``predict(..., loops=k)``).
"""

from __future__ import annotations

import torch
import torchmetrics
from torch import nn

from lit_loops.checks import check_data_decided, check_int, check_positive_int
from lit_loops.experiments.icl.tasks import interleave
from lit_loops.module import ExperimentModule
from lit_loops.nn import LayerStack, TransformerConfig, TransformerWrapper, VectorReadIn
from lit_loops.optim import OptimConfig
from lit_loops.schedules import StepSchedule


def prompt_model(net: TransformerConfig, n_dims: int, n_points: int) -> TransformerWrapper:
    """``(B, 2n, d)`` prompt -> ``(B, 2n, 1)``: linear read-in, learned positions, the blocks
    with a LayerNorm after every pass (the loop body; a standard model makes one pass),
    linear read-out. Predictions are read at the x positions ``0, 2, 4, ...``."""
    return TransformerWrapper(
        VectorReadIn(n_dims, net.d_model, 2 * n_points),
        LayerStack(net, causal=True, norm_each_loop=True),
        nn.Linear(net.d_model, 1),
        final_norm=False,  # the loop's own norm ends every pass
    )


class ICLModule(ExperimentModule):
    """Learns a function class in context (see the module docs).

    Args:
        n_dims, n_points: set from the data (the input dimension and the prompt length,
            which fixes the positions: ``2 * n_points``).
        looped: the looped model (``loops`` passes of ``net.n_layers`` blocks) instead of
            the standard one (one pass).
        net: the GPT-2-style blocks (GELU, ``d_mlp`` 4 * ``d_model`` by default).
        loops, loop_window: ``b`` and ``T`` of the looped model.
        loops_start, loops_increment, loops_every: the loop curriculum; ``loops_start``
            None starts at ``loop_window`` (Yang et al.), capped at ``loops``.
        eval_loops: loops at validation (None: ``loops``).
        loops_extra: each training step runs ``b + U{0..loops_extra}`` loops (the draw
            seeded by the step, so a resumed run repeats it), the window still the last T:
            the loss then sees loops past ``b``, which trains the output to stay put when
            the model is looped longer at test time (0: always ``b``).
        loops_extra_warmup: the most extra loops grows linearly from 0 at step 0 to
            ``loops_extra`` at this step (0: all of them from the start). Many loops
            from step 0 can keep a small-batch run on its initial plateau (measured:
            RESULTS.md); learning at ``b`` first and lengthening the loops later avoids it.
        optim: see ``lit_loops.optim`` (the papers: Adam, 1e-4, constant).
        compile: compile the network's blocks with ``torch.compile`` (``lit_loops.compile``).
    """

    monitor = ("val/nse_last", "min")

    @property
    def run_name(self) -> str:
        arch = (
            "looped_L{n_layers}_b{loops}_T{loop_window}"
            if self.hparams.looped
            else "standard_L{n_layers}"
        )
        return "icl_{task}_d{d}_" + arch

    def __init__(
        self,
        n_dims: int | None = None,
        n_points: int | None = None,
        looped: bool = False,
        net: TransformerConfig = TransformerConfig(
            d_model=256, n_layers=12, n_heads=8, activation="gelu"
        ),
        loops: int = 20,
        loop_window: int = 15,
        loops_start: int | None = None,
        loops_increment: int = 2,
        loops_every: int = 500,
        eval_loops: int | None = None,
        loops_extra: int = 0,
        loops_extra_warmup: int = 0,
        optim: OptimConfig = OptimConfig(optimizer="adam", lr=1e-4),
        compile: bool = False,
    ) -> None:
        super().__init__(compile=compile)
        check_data_decided(n_dims=n_dims, n_points=n_points)
        check_positive_int("loops", loops)
        check_positive_int("loop_window", loop_window)
        if eval_loops is not None:
            check_positive_int("eval_loops", eval_loops)
        check_int("loops_extra", loops_extra, min_value=0)
        check_int("loops_extra_warmup", loops_extra_warmup, min_value=0)
        self.net, self.optim = self.config_arg("net", net), self.config_arg("optim", optim)
        self.save_hyperparameters()
        self.model = prompt_model(self.net, n_dims, n_points)
        if looped:
            start = min(loops, loop_window if loops_start is None else loops_start)
            check_int("loops_start", start, min_value=1, max_value=loops)
            # The loop count b during training, logged by CurriculumLog.
            self.curriculum = StepSchedule("loops", start, loops, loops_increment, loops_every)
        else:
            self.curriculum = None
        self.val_nse = torchmetrics.MeanMetric()
        self.val_nse_last = torchmetrics.MeanMetric()

    def train_loops(self) -> int:
        return self.train_loops_at(self.global_step)

    def train_loops_at(self, step: int) -> int:
        """The loop count b of training step ``step``: the curriculum's, plus the extra."""
        if self.curriculum is None:
            return 1
        b = self.curriculum.value(step)
        extra = self.loops_extra_at(step)
        if extra:  # seeded by the step: the same draw on every rank and after a resume
            g = torch.Generator().manual_seed(step)
            b += int(torch.randint(extra + 1, (), generator=g))
        return b

    def loops_extra_at(self, step: int) -> int:
        """The most extra loops a training step ``step`` may draw (the warm-up's ramp)."""
        extra = self.hparams.get("loops_extra", 0)
        warmup = self.hparams.get("loops_extra_warmup", 0)
        if warmup and step < warmup:
            return extra * step // warmup
        return extra

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, loops: int | None = None):
        """``(B, n, d), (B, n) -> (B, n)``: each ``y_i`` predicted from the examples before
        it, after ``loops`` passes (default: ``eval_loops`` or ``loops``; 1 if standard)."""
        return self.predictions(xs, ys, self.eval_loop_count(loops), window=1)[-1]

    def predict_each_loop(self, xs: torch.Tensor, ys: torch.Tensor, loops: int):
        """The predictions after every loop ``1 .. loops``: a list of ``(B, n)``."""
        return self.predictions(xs, ys, loops)

    def predictions(
        self, xs: torch.Tensor, ys: torch.Tensor, loops: int, window: int | None = None
    ) -> list[torch.Tensor]:
        """``(B, n, d), (B, n)`` -> the predictions ``(B, n)`` after each of the last
        ``window`` loops (all when None), read at the x positions of the prompt."""
        outs = self.model.passes(interleave(xs, ys), loops, window)  # each (B, 2n, 1)
        return [out[:, ::2, 0] for out in outs]

    def eval_loop_count(self, loops: int | None = None) -> int:
        hp = self.hparams
        if not hp.looped:
            return 1
        if loops is not None:
            return loops
        return hp.loops if hp.eval_loops is None else hp.eval_loops

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        xs, ys = batch["xs"], batch["ys"]
        window = self.hparams.loop_window if self.hparams.looped else None
        loops = self.train_loops()
        preds = self.predictions(xs, ys, loops, window)  # list of (B, n)
        # mean over the window's loops of the mean squared error over all positions
        loss = torch.stack([(p - ys).pow(2).mean() for p in preds]).mean()
        B = xs.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/nse", (preds[-1] - ys).pow(2).mean() / batch["norm"], batch_size=B)
        if self.hparams.looped:  # b plus this step's draw of extra loops
            self.log("train/loops", float(loops), batch_size=B)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        xs, ys = batch["xs"], batch["ys"]
        err = (self.predict(xs, ys) - ys).pow(2) / batch["norm"]  # (B, n) normalised
        B = xs.shape[0]
        self.val_nse(err.mean(), weight=B)
        self.val_nse_last(err[:, -1].mean(), weight=B)
        self.log("val/nse", self.val_nse, on_step=False, on_epoch=True, batch_size=B)
        self.log("val/nse_last", self.val_nse_last, on_step=False, on_epoch=True, batch_size=B)

    test_step = validation_step
