import re

import pytest
import torch
import torch.nn.functional as F

from lit_loops.experiments.oocl import (
    OOCLDataModule,
    OOCLModule,
    Vocab,
    linkage_examples,
    split_pairs,
    table_examples,
)


# --- vocabulary and formats, against hand-worked examples (p = 5) ---------------------
def test_vocabulary_layout():
    v = Vocab(5)
    assert (v.equals, v.true, v.false, v.define, v.size) == (10, 11, 12, 13, 14)


def test_table_formats():
    pairs = torch.tensor([[2, 3], [4, 0]])
    # (2^2 + 3^2) mod 5 = 13 mod 5 = 3; (16 + 0) mod 5 = 1
    assert table_examples(pairs, 0, 5, "ssq").tolist() == [[11, 2, 3, 10, 3], [11, 4, 0, 10, 1]]
    # table 2 writes every operand and the result as its alias (+p)
    assert table_examples(pairs, 1, 5, "ssq").tolist() == [[11, 7, 8, 10, 8], [11, 9, 5, 10, 6]]


@pytest.mark.parametrize(
    "op, pair, result",
    [("add", (4, 3), 2), ("sub", (1, 3), 3), ("mul", (4, 4), 1), ("ssq", (1, 2), 0)],
)
def test_ops(op, pair, result):
    assert table_examples(torch.tensor([pair]), 0, 5, op)[0, -1].item() == result


def test_linkages_cover_every_alias_both_ways():
    links = linkage_examples(5)
    assert links.shape == (10, 5)
    assert links[0].tolist() == [13, 13, 0, 10, 5]
    assert links[5].tolist() == [13, 13, 5, 10, 0]
    pairs = {(a, b) for a, b in links[:, [2, 4]].tolist()}
    assert pairs == {(i, i + 5) for i in range(5)} | {(i + 5, i) for i in range(5)}


# --- splits ---------------------------------------------------------------------------
def as_set(pairs):
    return {tuple(x) for x in pairs.tolist()}


def test_split_sizes_and_disjointness():
    train, held = split_pairs(11, 0.8, seed=0, symmetric=False)
    assert len(held) == round(0.8 * 121) == 97 and len(train) == 24
    assert not as_set(train) & as_set(held)
    assert as_set(train) | as_set(held) == {(x, y) for x in range(11) for y in range(11)}


def test_symmetric_split_keeps_mirrors_together():
    train, held = split_pairs(11, 0.8, seed=0, symmetric=True)
    held_set, train_set = as_set(held), as_set(train)
    assert all((y, x) in held_set for x, y in held_set)
    assert all((y, x) in train_set for x, y in train_set)
    n_unordered_held = sum(1 for x, y in held_set if x <= y)
    assert n_unordered_held == round(0.8 * 66)
    assert len(held_set) + len(train_set) == 121


def test_datamodule_splits_are_independent_per_table_and_reproducible():
    dm = OOCLDataModule(p=11, holdout1=0.5, holdout2=0.5, split_seed=3)
    dm.setup("fit")
    assert not torch.equal(dm.val_pairs[0], dm.val_pairs[1])
    again = OOCLDataModule(p=11, holdout1=0.5, holdout2=0.5, split_seed=3)
    again.setup("fit")
    for t in (0, 1):
        assert dm.train_pairs[t].shape[1] == 2 and dm.train_pairs[t].dtype == torch.long
        torch.testing.assert_close(dm.train_pairs[t], again.train_pairs[t])
        torch.testing.assert_close(dm.val_pairs[t], again.val_pairs[t])


def test_dataloaders_work_without_a_trainer():
    dm = OOCLDataModule(p=11, holdout1=0.8, holdout2=0.6, batch_size=16, val_batch_size=50)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"table1", "table2", "linkage"}
    assert all(x.shape == (16, 5) and x.dtype == torch.long for x in batch.values())
    train1 = as_set(dm.train_pairs[0])
    assert as_set(batch["table1"][:, 1:3]) <= train1  # drawn from the training split only
    assert as_set(batch["table2"][:, 1:3] - 11) <= as_set(dm.train_pairs[1])
    val1, val2 = dm.val_dataloader()
    held1 = torch.cat([b["table1"] for b in val1])
    assert len(held1) == 97 and as_set(held1[:, 1:3]) == as_set(dm.val_pairs[0])
    assert len(torch.cat([b["table2"] for b in val2])) == round(0.6 * 121)


def test_model_args_come_from_the_data():
    assert OOCLDataModule(p=13).model_args() == {"vocab_size": 30, "seq_len": 5}


# --- the model ------------------------------------------------------------------------
SMALL = {"d_model": 16, "d_mlp": 32}  # fields over the module's own net


def test_the_net_and_optim_are_the_modules_defaults_overridden_by_a_dict():
    module = OOCLModule(vocab_size=26, seq_len=5, net=SMALL, optim={"lr": 3e-3})
    assert (module.net.d_model, module.net.d_mlp, module.net.n_layers) == (16, 32, 2)
    assert module.optim.lr == 3e-3 and module.optim.betas == (0.9, 0.98)  # the rest: defaults
    assert module.optim.weight_decay == 1.0 and module.optim.warmup_steps == 10
    assert module.hparams.net["d_model"] == 16 and module.hparams.optim["lr"] == 3e-3
    assert module.model.stack.causal and module.model.max_len == 5
    tied = OOCLModule(vocab_size=26, seq_len=5, net=SMALL, tie_embeddings=True)
    assert tied.model.head.weight is tied.model.read_in.tok_emb.weight
    assert module.num_parameters - tied.num_parameters == 26 * 16


# --- the loss -------------------------------------------------------------------------
def test_loss_is_the_weighted_sum_of_the_parts():
    torch.manual_seed(0)
    dm = OOCLDataModule(p=11, batch_size=8)
    module = OOCLModule(vocab_size=26, seq_len=5, k1=0.5, k2=2.0, k3=0.0, net=SMALL)
    batch = next(iter(dm.train_dataloader()))
    loss = module.training_step(batch, 0)
    expected = 0.0
    for part, k in (("table1", 0.5), ("table2", 2.0)):
        logits = module.model(batch[part][:, :4])[:, 3]
        expected = expected + k * F.cross_entropy(logits, batch[part][:, 4])
    torch.testing.assert_close(loss, expected)


def test_table1_loss_is_off_before_k1_from_step():
    torch.manual_seed(0)
    batch = next(iter(OOCLDataModule(p=11, batch_size=8).train_dataloader()))
    module = OOCLModule(vocab_size=26, seq_len=5, k1_from_step=5, net=SMALL)
    before = module.training_step(batch, 0)  # global_step is 0 without a trainer
    without_table1 = {k: v for k, v in batch.items() if k != "table1"}
    torch.testing.assert_close(
        before, sum(loss for loss, _ in module.part_losses(without_table1).values())
    )
    module.hparams.k1_from_step = 0
    assert module.training_step(batch, 0) > before


def test_answer_is_read_from_position_3_only():
    torch.manual_seed(0)
    module = OOCLModule(vocab_size=26, seq_len=5, net=SMALL).eval()
    x = torch.tensor([[23, 1, 2, 22, 5]])
    y = x.clone()
    y[0, 4] = 9  # the answer itself must not leak into its prediction
    torch.testing.assert_close(module(x), module(y))


# --- bad input fails at construction with the argument, the value and what is allowed --
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"p": 10}, re.escape("p=10 is invalid: must be a prime (2, 3, 5, 7, ..., 97, 101, ...)")),
        ({"p": 1}, "p=1 is invalid"),
        ({"holdout1": 1.0}, r"holdout1=1.0 is invalid: must be a finite number in \[0.0, 1.0\)"),
        ({"holdout1": 1.5}, r"holdout1=1.5 is invalid: must be a finite number in \[0.0, 1.0\)"),
        ({"holdout2": -0.1}, "holdout2=-0.1 is invalid"),
        (
            {"op": "pow"},
            re.escape("op='pow' is invalid: must be one of ['ssq', 'add', 'sub', 'mul']"),
        ),
        ({"batch_size": 0}, "batch_size=0 is invalid"),
        (
            {"batch_size": -32},
            re.escape("batch_size=-32 is invalid: must be an integer in [1, inf]"),
        ),
        ({"val_batch_size": -5}, "val_batch_size=-5 is invalid"),
    ],
)
def test_datamodule_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OOCLDataModule(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k1": -1.0}, "k1=-1.0 is invalid"),
        ({"k1": 0.0, "k2": 0.0, "k3": 0.0}, "at least one must be positive"),
        ({"net": {"n_heads": 5}}, "net.n_heads=5 is invalid: must divide net.d_model=128"),
        (
            {"net": {"norm": "batchnorm"}},
            re.escape("net.norm='batchnorm' is invalid: must be one of ['layernorm', 'none']"),
        ),
        ({"optim": {"lr": 0.0}}, "optim.lr=0.0 is invalid"),
        ({"optim": {"betas": (0.9, 1.5)}}, "optim.betas=.* is invalid: must be two numbers"),
        ({"optim": {"schedule": "plateau"}}, "optim.schedule='plateau' is invalid"),
        ({"vocab_size": None}, "vocab_size=None is invalid: is set from the DataModule"),
        ({"k1_from_step": -1}, "k1_from_step=-1 is invalid"),
    ],
)
def test_module_rejects_bad_input(kwargs, match):
    args = {"vocab_size": 26, "seq_len": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        OOCLModule(**args)


def test_holdout_that_leaves_no_training_pairs_is_rejected_at_construction():
    with pytest.raises(ValueError, match="holdout1=0.9 is invalid: leaves no training pairs"):
        OOCLDataModule(p=2, holdout1=0.9)
    with pytest.raises(
        ValueError, match="holdout1=0.999 is invalid: leaves no training pairs at p=31; lower it"
    ):
        OOCLDataModule(p=31, holdout1=0.999, symmetric_holdout=True)  # as in cpu.yaml
    with pytest.raises(ValueError, match="holdout2=0.95 is invalid: leaves no training pairs"):
        OOCLDataModule(p=3, holdout2=0.95, symmetric_holdout=True)  # 6 unordered pairs
    OOCLDataModule(p=3, holdout2=0.9, symmetric_holdout=True).setup()  # holds out 5 of 6
