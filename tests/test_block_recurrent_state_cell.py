"""The recurrent state cell's ``state_cell`` option (after google-research/meliad's
recurrent configurations: ``recurrent_skip_ffn`` / ``recurrent_single_gate``): ``skip``
(the default, today's cell: no feed-forward on the state path), ``dual`` (skip's gate,
then a feed-forward and a second gate) and ``single`` (a feed-forward over the
attention outputs, tanh, one gate). Shapes for every cell and gate, the default
unchanged, what the new cells add, bad values, gradients through the state, the
reference loader's refusal, and a 2-step fit through the CLI."""

from __future__ import annotations

import pytest
import torch
from test_block_recurrent import SMALL

from conftest import CONFIGS, cli
from lit_loops.experiments.block_recurrent.model import (
    BlockRecurrentConfig,
    BlockRecurrentTransformer,
)
from lit_loops.experiments.block_recurrent.reference import load_reference_weights

# configs/block_recurrent/recall_cpu.yaml's network
RECALL = dict(
    num_tokens=256,
    dim=64,
    depth=2,
    heads=2,
    dim_head=32,
    max_seq_len=128,
    block_width=32,
    num_state_vectors=16,
    recurrent_layers=[2],
)
CELLS = ("skip", "single", "dual")
NEW_CELLS = ("single", "dual")
GATES = ("fixed", "lstm")


def model(settings=SMALL, **options) -> BlockRecurrentTransformer:
    torch.manual_seed(0)
    return BlockRecurrentTransformer(**{**settings, **options}).eval()


def tokens(n: int, batch: int = 2, seed: int = 0, vocab: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, n), generator=torch.Generator().manual_seed(seed))


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_builds_and_runs(cell, gate):
    m = model(state_cell=cell, gate=gate, recurrent_layers=(2, 3), read_recurrent_layers=(1, 3))
    logits, mems, states = m(tokens(16))  # 2 blocks: states written twice
    assert logits.shape == (2, 16, 64)
    assert len(mems) == 3 and all(mem.shape == (2, 2, 8, 16) for mem in mems)
    assert len(states) == 2 and all(s.shape == (2, 4, 32) for s in states)  # (B, S, D)
    logits, _, states = m(tokens(16, seed=1), mems, states)  # carried on
    assert torch.isfinite(logits).all() and all(torch.isfinite(s).all() for s in states)
    loss, _, _ = m(tokens(17), return_loss=True)
    assert loss.dim() == 0 and torch.isfinite(loss)
    # cached decoding in uneven pieces still equals the full forward
    seq = tokens(24)
    full = torch.cat([m(seq[:, :16])[0], m(seq[:, 16:], *m(seq[:, :16])[1:])[0]], dim=1)
    cache, pieces, i = m.new_cache(2), [], 0
    for n in [3, 7, 1, 9, 4]:
        pieces.append(m.run(seq[:, i : i + n], cache))
        i += n
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("gate", GATES)
def test_the_default_is_the_skip_cell_bit_for_bit(gate):
    """No ``state_cell`` and ``state_cell="skip"``: the same parameters (names, count,
    values, seeded) and the same logits and states, exactly."""
    assert BlockRecurrentConfig().state_cell == "skip"
    before = model(RECALL, gate=gate)
    skip = model(RECALL, gate=gate, state_cell="skip")
    assert list(before.state_dict()) == list(skip.state_dict())
    assert all(torch.equal(t, skip.state_dict()[k]) for k, t in before.state_dict().items())
    # the counts of the model before the option (recall_cpu.yaml's network)
    assert count(before) == count(skip) == {"fixed": 158208, "lstm": 166464}[gate]
    assert not any(name.startswith("ff") for name, _ in skip.cells[0].named_parameters())
    seq = tokens(128, vocab=256)
    (a, _, sa), (b, _, sb) = before(seq), skip(seq)
    assert torch.equal(a, b) and torch.equal(sa[0], sb[0])


@pytest.mark.parametrize("gate", GATES)
def test_the_new_cells_add_a_feed_forward(gate):
    """At recall_cpu.yaml's size (dim 64, 16 states, 2 heads of 32, ff_mult 4: the
    feed-forward's width F = int(64 * 4 * 2/3) = 170): dual adds LN + (64 -> 2F) +
    (F -> 64) and a second gate; single replaces the projection and the first gate by
    (2*2*32 -> 2F) + (F -> 64) and a gate."""
    D, A, F = 64, 2 * 2 * 32, 170
    fixed = gate == "fixed"
    first_gate = D * D + D + D if fixed else D * 3 * D + 3 * D  # to_z + ema_logit / to_gates
    ff_gate = D if fixed else F * 2 * D + 2 * D  # ff_ema_logit / ff_gates
    cells = {c: count(model(RECALL, gate=gate, state_cell=c).cells) for c in CELLS}
    assert cells["dual"] - cells["skip"] == D + D * 2 * F + F * D + ff_gate
    assert cells["single"] - cells["skip"] == A * 2 * F + F * D + ff_gate - A * D - first_gate
    assert cells["skip"] == {"fixed": 31104, "lstm": 39360}[gate]
    assert cells["dual"] == {"fixed": 63872, "lstm": 93952}[gate]
    assert cells["single"] == {"fixed": 73152, "lstm": 94976}[gate]


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_the_new_cells_change_the_states(cell, gate):
    """With every parameter the two share copied from the skip cell's model, the states
    (and the logits after the first block, which read them) differ."""
    skip = model(gate=gate)
    other = model(gate=gate, state_cell=cell)
    missing, unexpected = other.load_state_dict(skip.state_dict(), strict=False)
    assert missing and all(".ff" in name for name in missing)  # only the new parts
    if cell == "dual":
        assert not unexpected
    seq = tokens(16)
    (a, _, sa), (b, _, sb) = skip(seq), other(seq)
    assert torch.equal(a[:, :8], b[:, :8])  # the first block reads the initial states
    assert not torch.allclose(sa[0], sb[0]) and not torch.allclose(a[:, 8:], b[:, 8:])


def test_dual_with_its_second_gate_shut_is_skip():
    """The fixed gate after dual's feed-forward at a = sigmoid(-1e4) = 0 keeps skip's
    update exactly: dual is skip followed by the feed-forward stage."""
    skip, dual = model(), model(state_cell="dual")
    dual.load_state_dict(skip.state_dict(), strict=False)
    with torch.no_grad():
        dual.cells[0].ff_ema_logit.fill_(-1e4)
    seq = tokens(16)
    (a, _, sa), (b, _, sb) = skip(seq), dual(seq)
    assert torch.equal(sa[0], sb[0]) and torch.equal(a, b)


@pytest.mark.parametrize("value", ["gru", "Dual", "", None, 1])
def test_a_bad_state_cell_names_the_field(value):
    with pytest.raises(ValueError, match=r"state_cell=.* is invalid: must be one of"):
        BlockRecurrentConfig(state_cell=value)
    with pytest.raises(ValueError, match="state_cell="):
        BlockRecurrentTransformer(**SMALL, state_cell=value)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_gradients_reach_the_feed_forward_through_the_state(cell, gate):
    """The loss of the second block reaches the state feed-forward only through the
    states written after the first block (the states after the second come back
    detached); the first block's loss does not reach it at all (zero gradients: the
    logits are computed together, so the second block's part of the graph is walked)."""
    m = model(state_cell=cell, gate=gate).train()
    ff_params = [p for name, p in m.cells[0].named_parameters() if name.startswith("ff")]
    seq, targets = tokens(16), tokens(16, seed=1)

    def loss_of(block: slice) -> torch.Tensor:
        m.zero_grad(set_to_none=True)
        logits, _, _ = m(seq)
        return torch.nn.functional.cross_entropy(
            logits[:, block].reshape(-1, 64), targets[:, block].reshape(-1)
        )

    loss_of(slice(0, 8)).backward()
    assert all(p.grad is None or not p.grad.any() for p in ff_params)
    loss_of(slice(8, 16)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ff_params)


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_loading_reference_weights_refuses_a_feed_forward_cell(cell):
    reference = pytest.importorskip("block_recurrent_transformer_pytorch")
    fields = {k: v for k, v in SMALL.items() if k != "num_tokens"}
    ref = reference.BlockRecurrentTransformer(num_tokens=64, use_flash_attn=False, **fields)
    ours = BlockRecurrentTransformer(64, state_cell=cell, **fields)
    with pytest.raises(ValueError, match=f"state_cell='{cell}' is invalid: must be 'skip'"):
        load_reference_weights(ours, ref)


def test_the_cli_fits_two_steps_with_the_dual_cell(in_tmp):
    run = cli(
        "fit",
        "--config", CONFIGS / "block_recurrent" / "recall_cpu.yaml",
        "--model.init_args.net.state_cell=dual",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2",
        "--data.init_args.val_batches=1", "--data.init_args.val_batch_size=8",
        "--data.init_args.batch_size=8",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    )  # fmt: skip
    assert run.trainer.global_step == 2
    assert run.model.net.state_cell == "dual"
    assert hasattr(run.model.model.cells[0], "ff")
    assert torch.isfinite(torch.as_tensor(float(run.trainer.callback_metrics["val/loss"])))
