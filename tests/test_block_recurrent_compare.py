"""Issue 21's comparison: the sliding-window option (no memory across segments), the
per-segment bits per byte and training-time logs of the four variant configs, and the
summary that reads their sweep (means, spreads, bpc at equal wall time, the PNG)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import CONFIGS, cli
from lit_loops.callbacks import Throughput
from lit_loops.experiments.block_recurrent.compare import (
    interpolate,
    load_runs,
    markdown_table,
    plot,
    summarise,
)
from lit_loops.experiments.block_recurrent.model import (
    BlockRecurrentTransformer,
    RecurrentTrainerWrapper,
)

SMALL = dict(
    num_tokens=64, dim=32, depth=2, dim_head=16, heads=2, max_seq_len=16, block_width=8,
    num_state_vectors=4,
)  # fmt: skip


def second_segment(wrapper: RecurrentTrainerWrapper, seq: torch.Tensor) -> torch.Tensor:
    return [logits for logits, _, s in wrapper.segment_logits(seq) if s == 1][0]


@pytest.mark.parametrize("recurrent_layers", [(), (2,)], ids=["xl", "recurrent"])
def test_sliding_window_starts_every_segment_without_memory(recurrent_layers):
    torch.manual_seed(0)
    m = BlockRecurrentTransformer(**SMALL, recurrent_layers=recurrent_layers).eval()
    seq = torch.randint(0, 64, (2, 33), generator=torch.Generator().manual_seed(0))
    slide = second_segment(RecurrentTrainerWrapper(m, carry_memories=False), seq)
    carried = second_segment(RecurrentTrainerWrapper(m), seq)
    assert not torch.allclose(slide, carried, atol=1e-5)  # the memory mattered
    # no memory, but the states (where there are any) still carried from segment 1
    _, _, states = m(seq[:, :16])
    alone = m(seq[:, 16:32], None, states if recurrent_layers else None)[0]
    assert torch.allclose(slide, alone, atol=1e-6)


def test_carry_memories_must_be_a_bool():
    m = BlockRecurrentTransformer(**SMALL)
    with pytest.raises(ValueError, match="carry_memories"):
        RecurrentTrainerWrapper(m, carry_memories="no")


def test_throughput_rejects_a_bad_window():
    with pytest.raises(ValueError, match="every_n_steps"):
        Throughput(every_n_steps=0)


SHRINK = [
    "--model.init_args.net.dim=32", "--model.init_args.net.depth=2",
    "--model.init_args.net.dim_head=16", "--model.init_args.net.max_seq_len=32",
    "--model.init_args.net.block_width=8", "--model.init_args.net.num_state_vectors=4",
    "--data.init_args.sample_len=129", "--data.init_args.batch_size=2",
    "--data.init_args.val_batches=1", "--data.init_args.val_batch_size=2",
    "--trainer.max_steps=4", "--trainer.val_check_interval=2",
    "--trainer.callbacks.every_n_steps=2",
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
]  # fmt: skip
VARIANT_CONFIGS = {
    "br_fixed": ([], [2], True, "fixed"),
    "br_lstm": (["compare_lstm.yaml"], [2], True, "lstm"),
    "xl": (["compare_xl.yaml"], [], True, "fixed"),
    "slide": (["compare_slide.yaml"], [], False, "fixed"),
}


@pytest.mark.parametrize("variant", list(VARIANT_CONFIGS))
def test_each_variant_config_trains_and_logs_bpc_per_segment(in_tmp, variant):
    overrides, layers, carry, gate = VARIANT_CONFIGS[variant]
    configs = [CONFIGS / "block_recurrent" / "compare.yaml"]
    configs += [CONFIGS / "block_recurrent" / o for o in overrides]
    layer_arg = ["--model.init_args.net.recurrent_layers=[2]"] if layers else []
    run = cli("fit", *[a for c in configs for a in ("--config", c)], *SHRINK, *layer_arg)
    net = run.model.hparams["net"]
    assert list(net["recurrent_layers"]) == layers and net["gate"] == gate
    assert run.model.wrapper.carry_memories is carry
    metrics = run.trainer.callback_metrics
    assert run.model.segments == 4  # 4 segments of 4 blocks
    assert {f"val/bpc_segment{s}" for s in range(4)} <= set(metrics)
    bpc = [float(metrics[f"val/bpc_segment{s}"]) for s in range(4)]
    assert float(metrics["val/bpc"]) == pytest.approx(sum(bpc) / 4, rel=1e-5)
    assert float(metrics["perf/elapsed_s"]) > 0 and float(metrics["perf/tokens_per_s"]) > 0


def write_sweep(folder, curves: dict) -> None:
    """A state.json as the sweep runner writes it: one run per (variant config, seed)."""
    runs = []
    for i, ((config, seed), history) in enumerate(curves.items()):
        runs.append(
            {
                "id": f"run-{i:03d}",
                "params": {"config": config, "seed_everything": seed},
                "state": "finished",
                "history": history,
                "summary": {"perf/tokens_per_s": 1000.0 * (i + 1), "perf/steps_per_s": 2.0},
            }
        )
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"runs": runs}))


def point(step, t, bpc, segments):
    h = {"step": step, "perf/elapsed_s": t, "val/bpc": bpc}
    h.update({f"val/bpc_segment{s}": v for s, v in enumerate(segments)})
    return h


def test_summary_means_spreads_and_equal_wall_time(tmp_path):
    xl, br = "configs/block_recurrent/compare_xl.yaml", "configs/block_recurrent/compare.yaml"
    write_sweep(
        tmp_path / "sweep",
        {
            (xl, 0): [point(10, 50.0, 3.0, [3.2, 2.8]), point(20, 100.0, 2.0, [2.2, 1.8])],
            (xl, 1): [point(10, 50.0, 3.2, [3.4, 3.0]), point(20, 100.0, 2.2, [2.4, 2.0])],
            # the state costs time: its last validation at 200 s, 1.5 bpc at 100 s
            (br, 0): [point(10, 100.0, 1.5, [1.6, 1.4]), point(20, 200.0, 1.0, [1.1, 0.9])],
        },
    )
    runs = load_runs(tmp_path / "sweep")
    rows = {r["variant"]: r for r in summarise(runs)}
    assert list(rows) == ["xl", "br_fixed"]  # the table's order, not the sweep's
    assert rows["xl"]["bpc"] == pytest.approx(2.1) and rows["xl"]["bpc_spread"] == pytest.approx(
        0.2
    )
    assert rows["xl"]["bpc_segment2"] == pytest.approx(1.9)
    assert rows["br_fixed"]["seeds"] == 1 and rows["br_fixed"]["bpc_segment1"] == pytest.approx(1.1)
    assert rows["br_fixed"]["equal_wall_s"] == 100.0
    # 1500 tokens a step (3000 tokens/s at 2 steps/s), 20 steps in 200 s
    assert rows["br_fixed"]["tokens_per_s"] == pytest.approx(150.0)
    assert rows["br_fixed"]["bpc_at_equal_wall"] == pytest.approx(1.5)
    assert rows["xl"]["bpc_at_equal_wall"] == pytest.approx(2.1)
    # paired with XL at seed 0, segments 2..: 0.9 - 1.8
    assert rows["br_fixed"]["later_vs_xl"] == [pytest.approx(-0.9)]
    assert rows["xl"]["later_vs_xl"] == [0.0, 0.0]
    table = markdown_table(list(rows.values()))
    assert "Transformer-XL" in table and "segment 2" in table
    plot(runs, list(rows.values()), tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 1000


def test_interpolate_between_validations_and_nan_past_the_last():
    history = [{"t": 0.0, "y": 4.0}, {"t": 10.0, "y": 2.0}]
    assert interpolate(history, "t", "y", 5.0) == pytest.approx(3.0)
    assert math.isnan(interpolate(history, "t", "y", 11.0))


def test_an_unknown_variant_config_is_named(tmp_path):
    write_sweep(tmp_path / "s", {("configs/other.yaml", 0): [point(1, 1.0, 1.0, [1.0])]})
    with pytest.raises(ValueError, match="other.yaml"):
        load_runs(tmp_path / "s")
