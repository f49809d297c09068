"""The alias-alignment metrics and callback (lit_loops/experiments/oocl/alignment.py)."""

import pytest
import torch

from conftest import TINY_OOCL, cli
from lit_loops.experiments.oocl import OOCLModule
from lit_loops.experiments.oocl.alignment import alias_metrics, embedding_alignment

P = 31


def random_embeddings(seed: int, d: int = 32) -> torch.Tensor:
    return torch.randn(P, d, generator=torch.Generator().manual_seed(seed))


def test_aliases_aligned_by_construction_score_one():
    g1 = random_embeddings(0)
    g2 = g1 + 5.0 + 0.01 * random_embeddings(1)  # a shared offset and a little noise
    m = embedding_alignment(g1, g2)
    assert m["precision1"] == 1.0 and m["procrustes_precision1"] == 1.0
    assert m["cos_matched"] > 0.99 and abs(m["cos_mismatched"]) < 0.2


def test_independent_embeddings_are_not_aligned():
    m = embedding_alignment(random_embeddings(0), random_embeddings(1))
    assert m["precision1"] < 0.2 and m["procrustes_precision1"] < 0.3
    assert abs(m["cos_matched"]) < 0.2


def test_a_rotated_copy_is_the_same_shape_but_not_aligned():
    """Procrustes finds the rotation; plain nearest neighbours do not."""
    g1 = random_embeddings(0)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(2)))
    m = embedding_alignment(g1, g1 @ q)
    assert m["procrustes_precision1"] == 1.0
    assert m["precision1"] < 0.2


def test_alias_metrics_on_a_model_with_tied_alias_embeddings():
    torch.manual_seed(0)
    module = OOCLModule(vocab_size=2 * P + 4, seq_len=5, net={"d_model": 32, "d_mlp": 64})
    model = module.model.eval()
    with torch.no_grad():  # group 2's rows = group 1's: aligned by construction
        model.read_in.tok_emb.weight[P : 2 * P] = model.read_in.tok_emb.weight[:P]
        model.head.weight[P : 2 * P] = model.head.weight[:P]
    held = torch.tensor([[1, 2], [3, 4], [5, 6]])
    m = alias_metrics(model, P, "ssq", held)
    assert m["in_precision1"] == 1.0 and m["out_precision1"] == 1.0
    assert m["in_cos_matched"] == pytest.approx(1.0)
    for key in ("probe_acc", "probe_group2", "patch_acc"):
        assert 0.0 <= m[key] <= 1.0
    random = alias_metrics(OOCLModule(vocab_size=2 * P + 4, seq_len=5).model.eval(), P, "ssq", held)
    assert random["in_precision1"] < 0.3 and random["out_precision1"] < 0.3


def test_the_callback_logs_every_metric_through_the_cli(in_tmp):
    run = cli(
        "fit", *TINY_OOCL, "--trainer.max_steps=2", "--trainer.val_check_interval=2",
        "--trainer.logger=false", "--trainer.callbacks+=lit_loops.experiments.oocl.AliasAlignment",
    )  # fmt: skip
    logged = run.trainer.callback_metrics
    for key in ("in_precision1", "out_procrustes_precision1", "probe_acc", "patch_acc"):
        assert f"val/alias_{key}" in logged, key
