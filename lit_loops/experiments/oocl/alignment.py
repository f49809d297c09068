"""What the model does with the aliases: embedding alignment and zero-shot probes.

Token ``i`` (group 1) and token ``i + p`` (group 2) name the same number. If training on
the linkages makes the model treat them alike, it shows in three places:

* **Alignment of the embeddings**, the input one (``read_in.tok_emb``) and the output one
  (``head``) apart. Each group is centred on its own mean (a shared offset between the
  groups says nothing about the map). ``cos_matched`` is the mean cosine of ``i`` and
  ``i + p``, ``cos_mismatched`` that of ``i`` and ``j + p``, ``j != i``.
  ``precision1`` is translation precision@1 (Dufter & Schütze 2020): is ``i + p`` the
  group-2 embedding nearest to ``i``? ``procrustes_precision1`` asks the same after an
  orthogonal map, fitted on half of the numbers and tested on the other half, between each
  group's top principal directions (fewer than the fit rows, so the map is determined). It
  is high when the two groups are the same shape up to a rotation, aligned or not.
* **Zero-shot probes**, cells never trained on in any form: the mixed cells
  ``[true, x, y+p, =]`` and ``[true, x+p, y, =]``, whose answer is read as right when it
  is ``f(x, y)`` in either group. The model's own answer is scored, and which group it
  answers in is logged (``probe_group2``).
* **Patching**: held-out table-1 prompts with the group-1 operand embeddings replaced by
  those of their aliases, i.e. the table-2 prompt of a cell held out of table 1. It asks
  whether the table-2 circuit answers it (``patch_acc``: the answer is ``f + p``).

``alias_metrics(model, p, op, held_out)`` computes them all; ``AliasAlignment`` logs them
as ``val/alias_<name>`` after every validation. The callback's interface: a LightningModule
whose ``model`` is a token ``TransformerWrapper`` (``read_in.tok_emb`` and ``head`` with a
``(V, D)`` ``weight``: full or factorised, ``nn.LowRankEmbedding`` / ``LowRankHead``)
and whose data is an ``OOCLDataModule``.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_loops.checks import check, check_int
from lit_loops.experiments.oocl.data import ANSWER_FROM, OPS, Vocab, table_examples


def centred(e: torch.Tensor) -> torch.Tensor:
    return e - e.mean(dim=0, keepdim=True)


def embedding_alignment(g1: torch.Tensor, g2: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Alignment of two groups of embeddings, row ``i`` of ``g1 (p, D)`` naming the same
    number as row ``i`` of ``g2 (p, D)`` (see the module docs)."""
    p = g1.shape[0]
    a = torch.nn.functional.normalize(centred(g1.double()), dim=1)
    b = torch.nn.functional.normalize(centred(g2.double()), dim=1)
    cos = a @ b.T  # (p, p): cos[i, j] = cos(e_i, e_{j+p})
    matched = cos.diagonal().mean()
    mismatched = (cos.sum() - cos.diagonal().sum()) / (p * p - p)
    precision = (cos.argmax(dim=1) == torch.arange(p)).double().mean()
    # orthogonal Procrustes fitted on half the numbers, tested on the other half. With
    # fewer fit rows than dimensions the map is not determined, so each group is first
    # reduced to its own top-k principal directions, k < the fit rows.
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(p, generator=g)
    fit, test = perm[: p // 2], perm[p // 2 :]
    k = max(1, min(a.shape[1], len(fit) - 1))
    a_k = a @ torch.linalg.svd(a, full_matrices=False)[2][:k].T  # (p, k)
    b_k = b @ torch.linalg.svd(b, full_matrices=False)[2][:k].T
    u, _, vh = torch.linalg.svd(a_k[fit].T @ b_k[fit])  # W = U V^T = argmin ||A W - B||
    mapped = a_k[test] @ (u @ vh)  # (p - p/2, k) group-1 test rows in group 2's frame
    dist = torch.cdist(mapped, b_k)  # (p - p/2, p): to every group-2 row
    procrustes = (dist.argmin(dim=1) == test).double().mean()
    return {
        "cos_matched": float(matched),
        "cos_mismatched": float(mismatched),
        "precision1": float(precision),
        "procrustes_precision1": float(procrustes),
    }


@torch.no_grad()
def answers(model: torch.nn.Module, prompts: torch.Tensor) -> torch.Tensor:
    """``(K, 5)`` examples -> ``(K,)`` the model's answer token (argmax at ``ANSWER_FROM``)."""
    return model(prompts[:, : ANSWER_FROM + 1], last_only=True)[:, -1].argmax(-1)


@torch.no_grad()
def alias_metrics(
    model: torch.nn.Module, p: int, op: str, held_out: torch.Tensor, seed: int = 0
) -> dict[str, float]:
    """Every alias metric of a token ``TransformerWrapper`` (see the module docs);
    ``held_out`` (K, 2): table 1's held-out operand pairs."""
    vocab, device = Vocab(p), next(model.parameters()).device
    out = {}
    emb_in = model.read_in.tok_emb.weight
    emb_out = model.head.weight  # (V, D): the unembedding's rows are the output embeddings
    for side, emb in (("in", emb_in), ("out", emb_out)):
        for name, value in embedding_alignment(emb[:p], emb[p : 2 * p], seed).items():
            out[f"{side}_{name}"] = value
    # zero-shot mixed cells over every pair: [true, x, y+p, =] and [true, x+p, y, =]
    x, y = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x, y = x.flatten(), y.flatten()
    r = OPS[op](x, y, p)
    right_either, in_group2 = [], []
    for ox, oy in ((0, p), (p, 0)):
        prompt = torch.stack(
            [torch.full_like(x, vocab.true), x + ox, y + oy, torch.full_like(x, vocab.equals), r],
            dim=1,
        ).to(device)
        got = answers(model, prompt).cpu()
        right_either.append((got == r) | (got == r + p))
        in_group2.append((got >= p) & (got < 2 * p))
    out["probe_acc"] = float(torch.cat(right_either).double().mean())
    out["probe_group2"] = float(torch.cat(in_group2).double().mean())
    # patching: the held-out table-1 cells with their operands' aliases (table 2's prompt)
    if len(held_out):
        patched = table_examples(held_out, 1, p, op).to(device)
        out["patch_acc"] = float((answers(model, patched) == patched[:, -1]).double().mean())
    return out


class AliasAlignment(Callback):
    """Logs ``val/alias_<metric>`` of ``alias_metrics`` after every validation of fit.

    Args:
        seed: the split of the numbers into the Procrustes fit and test halves.
    """

    def __init__(self, seed: int = 0) -> None:
        check_int("seed", seed, min_value=0)
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        model, data = getattr(pl_module, "model", None), trainer.datamodule
        check(
            hasattr(getattr(model, "read_in", None), "tok_emb")
            and hasattr(getattr(model, "head", None), "weight")
            and hasattr(data, "val_pairs"),
            "AliasAlignment",
            type(pl_module).__name__,
            "needs a token TransformerWrapper (read_in.tok_emb, a head with a weight) and an "
            "OOCLDataModule",
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        data = trainer.datamodule
        data.setup()
        was_training = pl_module.training
        pl_module.eval()
        metrics = alias_metrics(
            pl_module.model, data.hparams.p, data.hparams.op, data.val_pairs[0], self.seed
        )
        pl_module.train(was_training)
        for name, value in metrics.items():
            pl_module.log(f"val/alias_{name}", value, on_epoch=True, add_dataloader_idx=False)
