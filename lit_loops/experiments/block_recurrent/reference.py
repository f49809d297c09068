"""Our Block-Recurrent Transformer against the reference package, weight for weight.

The reference is lucidrains' ``block-recurrent-transformer-pytorch`` (0.4.4; installed by
``make bench`` only, never a runtime dependency: nothing here imports it). Its behaviour
is ours with ``REFERENCE_OPTIONS``:

- ``qk_norm_scale=None``: its cosine-sim attention runs at ``1/sqrt(dim_head)`` (its
  ``qk_rmsnorm_scale=8`` is computed and never passed to the attention), ours at 8;
- ``use_xpos=True``: it always scales its rotary positions by xPos;
- ``qk_norm_order="norm_first"``: it normalises q/k and multiplies the learned q/k
  scales before rotating them, ours rotates first;
- ``gate="fixed"``: its only gate (our ``lstm`` gate is our own design, with no
  reference counterpart to copy from);
- ``state_cell="skip"`` (the default): its state update has no feed-forward (our
  ``single`` and ``dual`` cells, after meliad's, have nothing to copy from either).

With those options, ``load_reference_weights(ours, ref)`` copies every parameter of the
reference into ours (the two hold the same parameters, named differently), and the two
give the same logits, XL memories and states (``tests/test_block_recurrent_reference.py``).

Where the two still differ, by design:

- absolute positions: a block's first token sits at position M (the memory's length) in
  ours, at ``width - block`` of the reference's fixed rotary table; rotary and xPos
  depend on offsets only, so the scores agree (to rounding);
- a trailing partial block: the reference writes the states from it (not the memories),
  ours neither (so that token-by-token decoding equals the full forward); compare on
  whole blocks;
- the reference returns memories and states only for a call of exactly
  ``max_seq_len`` tokens (unless ``return_memories_and_states=True``), ours always.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_loops.checks import check
from lit_loops.experiments.block_recurrent.model import (
    BlockRecurrentConfig,
    BlockRecurrentTransformer,
)

REFERENCE_OPTIONS = dict(
    qk_norm_scale=None, use_xpos=True, qk_norm_order="norm_first", gate="fixed"
)


def reference_config(**fields) -> BlockRecurrentConfig:
    """A ``BlockRecurrentConfig`` that behaves as the reference package at ``fields``
    (the package's own arguments: ``dim``, ``depth``, ``block_width`` ...)."""
    return BlockRecurrentConfig(**{**fields, **REFERENCE_OPTIONS})


def reference_names(ours: BlockRecurrentTransformer) -> dict[str, str]:
    """Our parameter names -> the reference's, for a model of ``ours``'s settings."""
    cfg = ours.cfg
    names = {
        "token_emb.weight": "token_emb.weight",
        "to_logits.0.weight": "to_logits.0.gamma",
        "to_logits.1.weight": "to_logits.1.weight",
    }
    for i, layer in enumerate(ours.layers):
        ref = f"layers.{i}"
        for part in ("to_q", "to_kv", "to_out"):
            names[f"layers.{i}.{part}.weight"] = f"{ref}.0.{part}.weight"
        names[f"layers.{i}.norm.weight"] = f"{ref}.0.norm.gamma"
        if layer.qk_norm is not None:
            for scale in ("q_scale", "k_scale"):
                names[f"layers.{i}.qk_norm.{scale}"] = f"{ref}.0.attn.{scale}"
        names[f"layers.{i}.ff.0.weight"] = f"{ref}.1.0.gamma"
        names[f"layers.{i}.ff.1.weight"] = f"{ref}.1.1.weight"
        names[f"layers.{i}.ff.3.weight"] = f"{ref}.1.3.weight"
        if cfg.use_compressed_mem:
            # MemoryManager: per layer (identity for the XL part, Sequential for the
            # compressed part: Rearrange, Conv1d, Rearrange)
            for p in ("weight", "bias"):
                names[f"compressors.{i}.{p}"] = f"mem_manager.layers.{i}.1.1.{p}"
    cell_parts = {
        "init_state": "init_state",
        "state_pos": "state_pos_ids",
        "ema_logit": "learned_ema_beta",
        "norm.weight": "state_norm.gamma",
        "state_kv.weight": "state_to_kv.weight",
        "token_q.weight": "q_to_state.weight",  # tokens read the states
        "self_q.weight": "state_to_q.weight",  # states attend to themselves
        "cross_q.weight": "q_from_state.weight",  # states attend to the block
        "out.weight": "to_state_out.weight",  # columns reordered: state_out_columns
        "to_z.weight": "state_out_to_gate.weight",
        "to_z.bias": "state_out_to_gate.bias",
    }
    attentions = {
        "qk_read": "to_state_cross_attn",
        "qk_self": "state_self_attn",
        "qk_cross": "from_state_cross_attn",
    }
    for r, layer in enumerate(cfg.writes):
        ref = f"layers.{layer - 1}.0.state_container"
        for ours_part, ref_part in cell_parts.items():
            names[f"cells.{r}.{ours_part}"] = f"{ref}.{ref_part}"
        for ours_part, ref_part in attentions.items():
            for scale in ("q_scale", "k_scale"):
                names[f"cells.{r}.{ours_part}.{scale}"] = f"{ref}.{ref_part}.{scale}"
    return names


def state_out_columns(weight: torch.Tensor, heads: int, dim_head: int) -> torch.Tensor:
    """The reference's ``to_state_out`` weight ``(D, 2*H*Dh)`` in our column order.

    Both concatenate the states' self-attention and their attention to the block, but
    the reference per head (``(B, H, S, 2*Dh)``, then heads merged: columns ordered
    head, part, channel), ours whole (``[self (B, S, H*Dh), cross (B, S, H*Dh)]``:
    part, head, channel)."""
    D = weight.shape[0]
    return weight.view(D, heads, 2, dim_head).transpose(1, 2).reshape(D, 2 * heads * dim_head)


def load_reference_weights(ours: BlockRecurrentTransformer, ref: nn.Module) -> None:
    """Copies the parameters of a reference ``BlockRecurrentTransformer`` into ``ours``
    (in place; dtypes and devices stay ours'), every one of them: a parameter of either
    left unmatched, or a shape that differs, is a ``ValueError``.

    ``ours`` must have the fixed gate (the reference's only one), the ``skip`` state cell
    (the reference has no feed-forward on the state path) and its recurrent layers
    in ascending order (the reference orders its states, and the reads a layer
    concatenates, by depth). The behaviour options are not checked: build ``ours`` from
    ``reference_config`` to get the reference's outputs, or with other options to see
    what each changes at the same weights."""
    cfg = ours.cfg
    check(cfg.gate == "fixed", "gate", cfg.gate, "must be 'fixed': the reference has no lstm gate")
    check(
        cfg.state_cell == "skip",
        "state_cell",
        cfg.state_cell,
        "must be 'skip': the reference has no feed-forward on the state path",
    )
    check(
        cfg.writes == sorted(cfg.writes),
        "recurrent_layers",
        cfg.recurrent_layers,
        "must be ascending to map onto the reference (it orders its states by depth)",
    )
    names = reference_names(ours)
    mine = dict(ours.named_parameters())
    theirs = dict(ref.named_parameters())
    # the mapping covers our parameters exactly (else it is out of date with model.py)
    assert set(names) == set(mine), sorted(set(names) ^ set(mine))
    missing = sorted(name for name, ref_name in names.items() if ref_name not in theirs)
    check(
        not missing,
        "ours",
        missing,
        "these parameters of ours have no reference counterpart: is the reference built "
        "at our settings?",
    )
    unused = sorted(set(theirs) - set(names.values()))
    check(
        not unused,
        "ref",
        unused,
        "these reference parameters have no place in ours: is ours built at its settings?",
    )
    for name, ref_name in names.items():
        check(
            mine[name].shape == theirs[ref_name].shape,
            name,
            tuple(mine[name].shape),
            f"differs from the reference's {ref_name} {tuple(theirs[ref_name].shape)}",
        )
    with torch.no_grad():
        for name, ref_name in names.items():
            weight = theirs[ref_name]
            if ref_name.endswith("to_state_out.weight"):
                weight = state_out_columns(weight, cfg.heads, cfg.dim_head)
            mine[name].copy_(weight)
