"""Issue 17's levers: factorised embeddings, group-1-only phase, small init, Grokfast, loops,
linkage forms."""

import pytest
import torch

from conftest import TINY_OOCL, cli
from lit_loops.experiments.oocl import OOCLDataModule, OOCLModule, Vocab, linkage_examples
from lit_loops.experiments.oocl.alignment import alias_metrics
from lit_loops.nn import LowRankEmbedding, LowRankHead

P = 11
SMALL = {"d_model": 32, "d_mlp": 64, "n_heads": 4}


def module(**kwargs) -> OOCLModule:
    torch.manual_seed(0)
    return OOCLModule(vocab_size=2 * P + 4, seq_len=5, net=SMALL, **kwargs)


def test_low_rank_embedding_and_head_are_their_products():
    torch.manual_seed(0)
    emb, head = LowRankEmbedding(26, 4, 32), LowRankHead(32, 4, 26)
    assert emb.weight.shape == (26, 32) and head.weight.shape == (26, 32)
    tokens = torch.tensor([[0, 5, 25]])
    torch.testing.assert_close(emb(tokens), emb.weight[tokens])
    x = torch.randn(3, 32)
    torch.testing.assert_close(head(x), x @ head.weight.T)
    # the product has rank 4, whatever its width
    assert torch.linalg.matrix_rank(emb.weight.detach()) == 4


def test_a_factorised_model_starts_at_gpt2_scale_and_its_aliases_are_measured():
    m = module(embedding_rank=8)
    emb, head = m.model.read_in.tok_emb, m.model.head
    assert isinstance(emb, LowRankEmbedding) and isinstance(head, LowRankHead)
    # the factors are re-scaled after GPT-2's N(0, 0.02): the product is at 0.02, not 0.0004
    assert 0.012 < emb.weight.std().item() < 0.03 and 0.012 < head.weight.std().item() < 0.03
    params = sum(t.numel() for t in (emb.table.weight, emb.proj.weight))
    assert params == (2 * P + 4) * 8 + 8 * 32  # instead of (2P + 4) * 32
    metrics = alias_metrics(m.model.eval(), P, "ssq", torch.tensor([[1, 2]]))
    assert 0.0 <= metrics["in_precision1"] <= 1.0 and 0.0 <= metrics["out_precision1"] <= 1.0
    with torch.no_grad():  # group 2's own numbers = group 1's: aligned by construction
        emb.table.weight[P : 2 * P] = emb.table.weight[:P]
        head.table.weight[P : 2 * P] = head.table.weight[:P]
    metrics = alias_metrics(m.model, P, "ssq", torch.tensor([[1, 2]]))
    assert metrics["in_precision1"] == 1.0 and metrics["out_precision1"] == 1.0


def test_init_scale_scales_every_matrix_and_no_norm():
    base, small = module(), module(init_scale=0.3)
    for (name, a), (_, b) in zip(base.named_parameters(), small.named_parameters(), strict=True):
        if a.dim() >= 2:
            torch.testing.assert_close(b, 0.3 * a, msg=name)
        else:
            torch.testing.assert_close(b, a, msg=name)


def fit_steps(m: OOCLModule, steps: int, seed: int = 0) -> None:
    """``steps`` optimizer steps through a Trainer (the hooks run as in a real run)."""
    import lightning as L

    data = OOCLDataModule(p=P, holdout1=0.5, holdout2=0.5, batch_size=16, seed=seed)
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(m, datamodule=data)


@pytest.mark.parametrize("rank", [None, 4])
@pytest.mark.parametrize("reinit", [False, True])
def test_group1_only_phase_trains_only_the_group1_rows(rank, reinit):
    m = module(embedding_rank=rank, group1_only_from_step=0, reinit_group1=reinit)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    tables = {
        id(t) for t in m.token_tables().values()
    }  # the per-token tables: only their group-1 rows may move
    fit_steps(m, 5)
    after = m.state_dict()
    moved = []
    for name, weight in m.named_parameters():
        old, new = before[name], after[name]
        if id(weight) in tables:
            torch.testing.assert_close(new[P:], old[P:], msg=name)  # aliases and specials
            assert not torch.equal(new[:P], old[:P]), name
            moved.append(name)
        else:
            torch.testing.assert_close(new, old, msg=name)  # the body and shared factors
    assert len(moved) == 2  # the embedding's and the unembedding's tables


def test_before_the_group1_phase_everything_trains():
    m = module(group1_only_from_step=100)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fit_steps(m, 3)
    changed = [k for k, v in m.state_dict().items() if not torch.equal(v, before[k])]
    assert any("stack" in k for k in changed)
    assert all(p.requires_grad for p in m.parameters())


def test_grokfast_adds_the_slow_gradient():
    m = module(grokfast_alpha=0.9, grokfast_lamb=2.0)
    w = m.model.head.weight
    g1, g2 = torch.randn_like(w), torch.randn_like(w)
    w.grad = g1.clone()
    m.on_before_optimizer_step(None)
    torch.testing.assert_close(w.grad, g1 + 2.0 * g1)  # the average starts at the gradient
    w.grad = g2.clone()
    m.on_before_optimizer_step(None)
    torch.testing.assert_close(w.grad, g2 + 2.0 * (0.9 * g1 + 0.1 * g2))
    checkpoint = {}
    m.on_save_checkpoint(checkpoint)
    restored = module(grokfast_alpha=0.9, grokfast_lamb=2.0)
    restored.on_load_checkpoint(checkpoint)
    torch.testing.assert_close(restored._grad_ema["head.weight"], 0.9 * g1 + 0.1 * g2)


def test_a_looped_model_reads_the_answer_after_every_loop():
    m = module(loops=3).eval()
    tokens = OOCLDataModule(p=P).train_examples()["table1"][:4]
    out = m(tokens)
    assert out.shape == (4, 2 * P + 4)
    assert len(m.model.stack.blocks) == SMALL.get("n_layers", 2)
    torch.testing.assert_close(out, m.model(tokens[:, :4], loops=3)[:, -1])


def test_linkage_forms():
    v = Vocab(P)
    define = linkage_examples(P, "define")
    assert define.shape == (2 * P, 5)
    operand = linkage_examples(P, "operand")
    assert operand.shape == (4 * P, 5)
    assert (operand[2 * P :, 1] != v.define).all() and (operand[2 * P :, 2] == v.define).all()
    for rows in (define, operand):
        a = torch.where(rows[:, 1] == v.define, rows[:, 2], rows[:, 1])
        assert ((rows[:, 4] - a).abs() == P).all()  # b is a's alias
    compare = linkage_examples(P, "compare")
    truth = compare[:, 4]
    assert (truth == v.true).sum() == (truth == v.false).sum() == 2 * P * (P - 1)  # balanced
    a, b = compare[:, 1], compare[:, 2]
    assert (((a - b).abs() == P) == (truth == v.true)).all()
    assert ((a < P) != (b < P)).all()  # always one number and an alias


def test_the_levers_run_through_the_cli(in_tmp):
    run = cli(
        "fit", *TINY_OOCL, "--trainer.max_steps=4", "--trainer.val_check_interval=2",
        "--trainer.logger=false", "--model.init_args.embedding_rank=4",
        "--model.init_args.group1_only_from_step=2", "--model.init_args.init_scale=0.5",
        "--model.init_args.grokfast_alpha=0.98", "--data.init_args.linkage_form=compare",
    )  # fmt: skip
    assert "val/alias_in_precision1" in run.trainer.callback_metrics
    assert run.trainer.global_step == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"embedding_rank": 0}, "embedding_rank"),
        ({"embedding_rank": 4, "tie_embeddings": True}, "tie_embeddings"),
        ({"reinit_group1": True}, "reinit_group1"),
        ({"group1_only_from_step": -1}, "group1_only_from_step"),
        ({"loops": 0}, "loops"),
        ({"init_scale": 0.0}, "init_scale"),
        ({"grokfast_alpha": 1.0}, "grokfast_alpha"),
    ],
)
def test_the_levers_reject_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        module(**kwargs)


def test_an_unknown_linkage_form_is_rejected():
    with pytest.raises(ValueError, match="linkage_form"):
        OOCLDataModule(p=P, linkage_form="swap")


def test_table1_alone_before_k1_from_step_still_steps():
    # (1,0,0) in the phased setting: no part is on before k1_from_step, the steps go on
    m = module(k2=0.0, k3=0.0, k1_from_step=3)
    fit_steps(m, 4)
    assert m.trainer.global_step == 4


def test_the_lever_map_reads_sweep_folders(tmp_path):
    import json

    from lit_loops.experiments.oocl.levers import lever_rows, markdown_table, plot, write_csv

    def history(acc1):  # two validations
        return [
            {"step": 250, "val/acc_table1": 0.1, "val/alias_in_precision1": 0.2},
            {"step": 500, "val/acc_table1": acc1, "val/acc_table2": 0.9,
             "train/acc_table1": 1.0, "val/alias_in_precision1": 0.5},
        ]  # fmt: skip

    folder = tmp_path / "oocl_rank"
    folder.mkdir()
    runs = [
        {"id": "run-000", "state": "finished", "wall_s": 60.4, "history": history(0.05),
         "params": {"config": "configs/oocl/k100.yaml", "model.init_args.embedding_rank": 8}},
        {"id": "run-001", "state": "finished", "wall_s": 90.0, "history": history(0.97),
         "params": {"config": "configs/oocl/k111.yaml", "model.init_args.embedding_rank": 8}},
        {"id": "run-002", "state": "crashed", "history": [], "params": {}},
    ]  # fmt: skip
    (folder / "state.json").write_text(json.dumps({"runs": runs}))
    rows = lever_rows([folder])
    assert [(r["lever"], r["ks"], r["setting"]) for r in rows] == [
        ("rank", "(1,0,0)", "embedding_rank=8"),
        ("rank", "(1,1,1)", "embedding_rank=8"),
    ]  # the crashed run never validated: no row
    assert rows[1]["table1"] == 0.97 and rows[0]["best_table1"] == 0.1
    assert rows[0]["in_p1"] == 0.5 and rows[0]["out_p1"] is None
    text = markdown_table(rows)
    assert "| rank | embedding_rank=8 | (1,1,1) | 500 | 0.970 (0.970) | 0.900 |" in text
    write_csv(rows, tmp_path / "map.csv")
    assert (tmp_path / "map.csv").read_text().count("\n") == 3
    plot(rows, tmp_path / "map.png", chance=1 / 31)
    assert (tmp_path / "map.png").stat().st_size > 10_000


def test_mixed_cells_are_table2_cells_with_one_operand_in_group1():
    from lit_loops.experiments.oocl import mixed_examples

    pairs = torch.tensor([[1, 2], [3, 4]])
    cells = mixed_examples(pairs, P, "ssq")
    assert cells.shape == (4, 5)
    assert cells[:2, 1].tolist() == [1, 3] and cells[:2, 2].tolist() == [2 + P, 4 + P]
    assert cells[2:, 1].tolist() == [1 + P, 3 + P] and cells[2:, 2].tolist() == [2, 4]
    assert cells[:, 4].tolist() == [(1 + 4) % P + P, (9 + 16) % P + P] * 2  # answer in group 2
    dm = OOCLDataModule(p=P, holdout1=0.5, holdout2=0.5, mixed_cells=True)
    examples = dm.train_examples()
    assert len(examples["mixed"]) == 2 * len(dm.train_pairs[1])  # table 2's training pairs
    held1 = {tuple(x) for x in dm.val_pairs[0].tolist()}
    trained1 = {tuple(c) for c in examples["table1"][:, 1:3].tolist()}
    assert not held1 & trained1  # held-out table-1 cells stay unseen as table-1 cells
    assert "mixed" not in OOCLDataModule(p=P).train_examples()


def test_k_mixed_trains_the_mixed_part_and_needs_the_data():
    dm = OOCLDataModule(p=P, batch_size=8, mixed_cells=True)
    batch = next(iter(dm.train_dataloader()))
    assert batch["mixed"].shape == (8, 5)
    m = module(k_mixed=0.5)
    loss = m.training_step(batch, 0)
    parts = m.part_losses(batch)
    expected = sum(k * parts[part][0] for part, k in m.weights.items())
    torch.testing.assert_close(loss, expected)
    no_mixed = next(iter(OOCLDataModule(p=P, batch_size=8).train_dataloader()))
    with pytest.raises(ValueError, match="mixed_cells"):
        m.training_step(no_mixed, 0)


def test_full_batch_is_every_training_example():
    dm = OOCLDataModule(p=P, holdout1=0.5, holdout2=0.5, full_batch=True)
    batch = next(iter(dm.train_dataloader()))
    for part, examples in dm.train_examples().items():
        torch.testing.assert_close(batch[part], examples)
