"""Memory estimate of a sequence model: the design document's formulas, the parameters and
optimizer state they leave out, and the measured peak of one training step.

The document's terms (float32, 4 bytes)::

    embedding     = num_embeddings * embedding_dim * 4
    per layer     = 2 * (embedding_dim * num_heads * seq_length * 4) + ff_dim * seq_length * 4
    layers        = num_layers * per layer
    batch         = batch_size * seq_length * embedding_dim * 4
    backward      = 2-3x the forward total ("intermediate activations")

``estimate`` adds what training also holds: the weights, their gradients and AdamW's two
moments (4 copies of the parameters). ``measure_peak`` runs one training step and reads
the device's peak (CUDA: ``max_memory_allocated``; CPU: the growth of the process's peak
resident memory, a coarse upper bound).
"""

from __future__ import annotations

import resource
import sys

import torch

from lit_loops.experiments.sequences.model import VOCAB

BYTES = 4  # float32


def estimate(
    d_model: int,
    n_layers: int,
    n_heads: int,
    d_ff: int,
    seq_len: int,
    batch_size: int,
    num_parameters: int,
    num_embeddings: int = VOCAB,
) -> dict[str, int]:
    """Bytes, by the document's terms plus the training state; ``total`` takes the
    document's upper factor (3x the forward pass)."""
    embedding = num_embeddings * d_model * BYTES
    per_layer = 2 * (d_model * n_heads * seq_len * BYTES) + d_ff * seq_len * BYTES
    layers = n_layers * per_layer
    batch = batch_size * seq_len * d_model * BYTES
    forward = embedding + layers + batch
    training_state = 4 * num_parameters * BYTES  # weights, grads, AdamW exp_avg, exp_avg_sq
    return {
        "embedding": embedding,
        "layers": layers,
        "batch": batch,
        "forward (document)": forward,
        "with backward (document, 3x)": 3 * forward,
        "weights + grads + AdamW": training_state,
        "total": 3 * forward + training_state,
    }


def _peak_rss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def measure_peak(module, batch: dict, device: str = "cpu") -> int:
    """Bytes at the peak of one forward + backward + AdamW step on ``device``."""
    module = module.to(device)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    opt = torch.optim.AdamW(module.parameters())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
    else:
        start = _peak_rss()
    loss, _ = module.loss(batch)
    loss.backward()
    opt.step()
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) - start
    return max(0, _peak_rss() - start)


def report(sizes: dict[str, int], measured: int | None, budget_gb: float) -> str:
    lines = [f"{name:32s} {size / 2**20:10.2f} MiB" for name, size in sizes.items()]
    if measured is not None:
        lines.append(f"{'measured peak (one step)':32s} {measured / 2**20:10.2f} MiB")
    need = max(sizes["total"], measured or 0)
    verdict = "fits" if need <= budget_gb * 2**30 else "does NOT fit"
    lines.append(f"{verdict} in {budget_gb:g} GB")
    return "\n".join(lines)
