"""In-context learning: samplers, prompt layout, the looped model's loss window, the
curricula, and a short run in which the loss falls."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from conftest import CONFIGS, TINY_OOCL, cli
from lit_loops.experiments.icl import (
    ICLDataModule,
    ICLModule,
    interleave,
    make_task,
    prompt_model,
    sample_xs,
)
from lit_loops.experiments.icl.tasks import (
    DecisionTree,
    NoisyLinearRegression,
    ReluNet,
    SparseLinearRegression,
)
from lit_loops.nn import TransformerConfig
from lit_loops.schedules import StepSchedule

STANDARD = [CONFIGS / "icl" / "cpu.yaml"]  # the config stacks of the CPU models
LOOPED = [*STANDARD, CONFIGS / "icl" / "cpu_looped.yaml"]


def configs(stack) -> list[str]:
    return [arg for path in stack for arg in ("--config", str(path))]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- samplers ------------------------------------------------------------------------
def test_xs_are_standard_normal_and_zero_past_the_active_dimensions():
    xs = sample_xs(gen(), 512, 32, 10, d_active=6)
    assert xs.shape == (512, 32, 10)
    active = xs[..., :6]
    assert abs(active.mean()) < 0.02 and abs(active.var() - 1) < 0.03
    assert (xs[..., 6:] == 0).all()


def test_skewed_xs_have_trace_d_and_spread_eigenvalues():
    xs = sample_xs(gen(), 64, 4096, 5, dist="skewed")
    cov = torch.einsum("bni,bnj->bij", xs, xs) / xs.shape[1]  # per-prompt covariance
    assert torch.allclose(cov.diagonal(dim1=1, dim2=2).sum(-1), torch.full((64,), 5.0), rtol=0.1)
    eig = torch.linalg.eigvalsh(cov[0])
    # eigenvalues ∝ 1/i², scaled to sum 5: 3.41, 0.85, 0.38, 0.21, 0.14
    assert torch.allclose(eig.flip(0), torch.tensor([3.41, 0.85, 0.38, 0.21, 0.14]), rtol=0.15)


def test_scaled_xs():
    xs = sample_xs(gen(), 256, 64, 4, dist="scaled", scale=3.0)
    assert abs(xs.std() - 3.0) < 0.1


@pytest.mark.parametrize(
    "name, expected_y2",
    [
        ("linear_regression", 6.0),
        ("noisy_linear_regression", 6.0 + 0.25),
        ("relu_2nn_regression", 6.0),
    ],
)
def test_target_scale(name, expected_y2):
    """E[y²]: d for linear regression (+ noise²), ≈ d for the scaled ReLU net."""
    task = make_task(name, noise_std=0.5, hidden=100)
    xs = sample_xs(gen(), 2048, 16, 8, d_active=6)
    ys = task.sample(gen(1), xs, 6)
    assert ys.shape == (2048, 16)
    assert abs(ys.pow(2).mean() / expected_y2 - 1) < 0.08


def test_sparse_weights_have_exactly_k_nonzeros_on_uniform_supports():
    task = SparseLinearRegression(sparsity=3)
    (w,) = task.function(gen(), 6000, 10)
    assert ((w != 0).sum(1) == 3).all()
    hits = (w != 0).float().mean(0)  # each coordinate in the support with probability 3/10
    assert torch.allclose(hits, torch.full((10,), 0.3), atol=0.03)
    assert task.normaliser(10) == 3.0


def test_sparse_targets_depend_only_on_the_support():
    task = make_task("sparse_linear_regression", sparsity=2)
    xs = sample_xs(gen(), 32, 40, 8)
    ys = task.sample(gen(1), xs, 8)
    w = torch.linalg.lstsq(xs, ys.unsqueeze(-1)).solution.squeeze(-1)  # (B, d) exact
    assert ((w.abs() > 1e-4).sum(1) == 2).all()


def test_tree_targets_are_piecewise_constant_with_at_most_2_to_the_depth_leaves():
    tree = DecisionTree(depth=3)
    xs = sample_xs(gen(), 64, 400, 5)
    ys = tree.sample(gen(1), xs, 5)
    for prompt in ys:
        assert 2 <= len(prompt.unique()) <= 8
    # depth 1: the value depends on the sign of one coordinate only
    ys1 = DecisionTree(depth=1).sample(gen(2), xs, 5)
    for x, y in zip(xs, ys1, strict=True):
        assert any(
            len(y[x[:, c] > 0].unique()) == 1 and len(y[x[:, c] <= 0].unique()) == 1
            for c in range(5)
        )


def test_tree_hand_worked():
    """Depth 2: the root tests x0, its children x1; the leaves (nodes 3..6) hold 10..40."""
    coord = torch.tensor([[0, 1, 1, 0, 0, 0, 0]])
    value = torch.tensor([[0.0, 0.0, 0.0, 10.0, 20.0, 30.0, 40.0]])
    xs = torch.tensor([[[0.5, -1.0], [-1.0, 2.0], [-1.0, -2.0], [3.0, 0.1]]])
    ys = DecisionTree(depth=2).apply((coord, value), xs)
    torch.testing.assert_close(ys, torch.tensor([[30.0, 20.0, 10.0, 40.0]]))
    assert DecisionTree(depth=2).normaliser(5) == 1.0


def test_relu_net_hand_worked_and_normalised_by_d():
    """``sqrt(2 / hidden) * w2 · relu(W1 x)`` on two inputs, hidden 2; errors / d."""
    w1 = torch.tensor([[[1.0, -1.0], [0.0, 2.0]]])  # (B=1, d=2, hidden=2)
    w2 = torch.tensor([[[1.0], [3.0]]])  # (1, hidden, 1)
    xs = torch.tensor([[[1.0, 1.0], [1.0, -1.0]]])
    ys = ReluNet(hidden=2).apply((w1, w2), xs)  # W1ᵀx = (1, 1) and (1, -3)
    torch.testing.assert_close(ys, torch.tensor([[4.0, 1.0]]))
    assert ReluNet(hidden=100).normaliser(7) == 7.0  # E[y²] = d (test_target_scale)


def test_noisy_regression_defaults_to_the_official_noise_and_renormalises_as_garg():
    assert make_task("noisy_linear_regression").noise_std == 0.1
    assert ICLDataModule(task="noisy_linear_regression").task.noise_std == 0.1
    w = torch.tensor([[1.0, 0.0]])
    xs = torch.tensor([[[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]]])  # w·x = 1, 2, 3, 4
    plain = NoisyLinearRegression(noise_std=0.0).apply((w,), xs)
    torch.testing.assert_close(plain, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    renormed = NoisyLinearRegression(noise_std=0.0, renormalize_ys=True).apply((w,), xs)
    std = (5 / 3) ** 0.5  # the unbiased std of 1, 2, 3, 4
    torch.testing.assert_close(renormed, plain * 2**0.5 / std)
    noisy = NoisyLinearRegression(noise_std=0.1, renormalize_ys=True)
    ys = noisy.sample(gen(), sample_xs(gen(1), 256, 16, 4), 4)
    assert abs(ys.std().item() - 2.0) < 1e-4  # sqrt(d) after the noise, over the batch


def test_tree_uses_only_active_coordinates():
    xs = sample_xs(gen(), 16, 100, 8, d_active=3)
    noise = xs.clone()
    noise[..., 3:] = torch.randn(16, 100, 5)
    tree = DecisionTree(depth=4)
    assert torch.equal(tree.sample(gen(1), xs, 3), tree.sample(gen(1), noise, 3))


def test_unknown_task_and_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="task='lin_reg' is invalid"):
        make_task("lin_reg")
    with pytest.raises(ValueError, match="sparsity=5 is invalid.*active dimension"):
        ICLDataModule(task="sparse_linear_regression", d=8, sparsity=5, dims_start=4)
    with pytest.raises(ValueError, match="dims_start=9"):
        ICLDataModule(d=8, dims_start=9)
    with pytest.raises(ValueError, match="noise_std=-1"):
        make_task("noisy_linear_regression", noise_std=-1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "cubic_regression"}, "task='cubic_regression' is invalid: must be one of ['linear_regression', "),
        ({"d": 5, "dims_start": 9}, "dims_start=9 is invalid: must not exceed the final value 5"),
        ({"curriculum_every": 0}, "curriculum_every=0 is invalid: must be an integer in [1, inf]"),
    ],
)  # fmt: skip
def test_datamodule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ICLDataModule(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"net": {"dropout": 2.0}}, "net.dropout=2.0 is invalid: must be a finite number in [0.0, 1.0)"),
        ({"loops_extra_warmup": -5}, "loops_extra_warmup=-5 is invalid: must be an integer in [0, inf]"),
        ({"loops_extra": -1}, "loops_extra=-1 is invalid"),
        ({"loops": 0}, "loops=0 is invalid"),
        ({"loop_window": 0}, "loop_window=0 is invalid"),
        ({"eval_loops": 0}, "eval_loops=0 is invalid"),
        ({"looped": True, "loops": 4, "loops_start": 0}, "loops_start=0 is invalid: must be an integer in [1, 4]"),
        ({"n_points": None}, "n_points=None is invalid: is set from the DataModule"),
        ({"optim": {"optimizer": "sgd"}}, "optim.optimizer='sgd' is invalid: must be one of ['adamw', 'adam']"),
    ],
)  # fmt: skip
def test_module_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ICLModule(**{"n_dims": 4, "n_points": 9, **kwargs})


# --- prompts and data ------------------------------------------------------------------
def test_prompt_interleaves_x_and_y_padded_with_zeros():
    xs, ys = torch.randn(2, 3, 4), torch.randn(2, 3)
    zs = interleave(xs, ys)
    assert zs.shape == (2, 6, 4)
    assert torch.equal(zs[:, 0::2], xs)
    assert torch.equal(zs[:, 1::2, 0], ys) and (zs[:, 1::2, 1:] == 0).all()


def test_stream_follows_the_curriculum_and_draws_on_the_device():
    dm = ICLDataModule(d=8, n_points=17, dims_start=4, points_start=9, curriculum_every=10)
    specs = [dm.train_dataloader().dataset.make_batch(gen(s), s) for s in (0, 9, 10, 35, 999)]
    assert [(s["dims"], s["points"]) for s in specs] == [
        (4, 9),
        (4, 9),
        (5, 11),
        (7, 15),
        (8, 17),
    ]
    batch = dm.materialize(specs[2])
    assert batch["xs"].shape == (64, 11, 8) and batch["ys"].shape == (64, 11)
    assert (batch["xs"][..., 5:] == 0).all() and batch["norm"] == 5.0
    again = dm.materialize(specs[2])  # the seed fixes the batch
    assert torch.equal(batch["xs"], again["xs"]) and torch.equal(batch["ys"], again["ys"])
    assert dm.curriculum.current(10) == {"dims": 5.0, "points": 11.0}


def test_validation_prompts_are_full_size_and_fixed():
    dm = ICLDataModule(d=8, n_points=17, dims_start=4, val_size=100, val_batch_size=64)
    batches = list(dm.val_dataloader())
    assert [b["xs"].shape for b in batches] == [(64, 17, 8), (36, 17, 8)]
    again = ICLDataModule(d=8, n_points=17, val_size=100, val_batch_size=64).val_batches()
    assert torch.equal(batches[0]["ys"], again[0]["ys"])


# --- models ----------------------------------------------------------------------------
def tiny(looped: bool, **kw) -> ICLModule:
    torch.manual_seed(0)
    net = dict(d_model=32, n_heads=2, n_layers=1 if looped else 2)
    return ICLModule(n_dims=4, n_points=9, looped=looped, net=net, **kw)


def test_the_module_builds_the_prompt_model_from_its_net():
    model = tiny(True)
    assert model.net.activation == "gelu"  # the module's default, kept by a partial net
    assert model.hparams.net["d_model"] == 32 and model.optim.optimizer == "adam"
    assert model.model.max_len == 18 and len(model.model.stack.blocks) == 1
    assert model.model.stack.causal and model.model.stack.loop_norm is not None
    net = TransformerConfig(d_model=32, n_layers=1, n_heads=2, activation="gelu")
    assert prompt_model(net, 4, 9).num_parameters() == model.num_parameters


@pytest.mark.parametrize("looped", [False, True])
def test_predictions_never_see_their_own_or_later_examples(looped):
    model = tiny(looped, loops=4, loop_window=2)
    xs, ys = torch.randn(3, 9, 4), torch.randn(3, 9)
    before = model.predict(xs, ys)
    changed = ys.clone()
    changed[:, 5:] += 10.0
    after = model.predict(xs, changed)
    assert torch.allclose(before[:, :6], after[:, :6], atol=1e-5)
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_loss_window_backpropagates_through_the_last_T_loops_only():
    model = tiny(True, loops=6, loop_window=2, loops_start=6)
    calls_with_grad = []
    block = model.model.stack.blocks[0]
    block.register_forward_pre_hook(lambda *_: calls_with_grad.append(torch.is_grad_enabled()))
    batch = {"xs": torch.randn(4, 9, 4), "ys": torch.randn(4, 9), "norm": 4.0}
    loss = model.training_step(batch, 0)
    assert calls_with_grad == [False] * 4 + [True] * 2
    loss.backward()
    grad = block.attn.qkv.weight.grad.clone()

    # the same loss by hand: 4 loops, detach, then 2 loops with gradient
    model.zero_grad()
    zs = interleave(batch["xs"], batch["ys"])
    net = model.model
    e = net.read_in(zs)  # the linear read-in plus the learned positions
    z = torch.zeros_like(e)
    for _ in range(4):
        z = net.stack.step(z + e).detach()
    losses = []
    for _ in range(2):
        z = net.stack.step(z + e)
        pred = net.head(net.norm_final(z))[:, ::2, 0]  # read at the x positions
        losses.append((pred - batch["ys"]).pow(2).mean())
    by_hand = torch.stack(losses).mean()
    assert torch.allclose(loss, by_hand)
    by_hand.backward()
    assert torch.allclose(grad, block.attn.qkv.weight.grad, atol=1e-6)


def test_loop_curriculum_and_test_time_loops():
    model = tiny(True, loops=12, loop_window=4, loops_increment=2, loops_every=100)
    assert [model.curriculum.value(s) for s in (0, 99, 100, 250, 10_000)] == [4, 4, 6, 8, 12]
    xs, ys = torch.randn(2, 9, 4), torch.randn(2, 9)
    each = model.predict_each_loop(xs, ys, 48)  # far past b: 4b loops
    assert len(each) == 48 and torch.allclose(each[11], model.predict(xs, ys))
    assert torch.allclose(each[-1], model.predict(xs, ys, loops=48))
    assert tiny(False).curriculum is None


def test_extra_loops_are_drawn_per_step_past_the_curriculum():
    model = tiny(True, loops=6, loop_window=2, loops_start=6, loops_extra=4)
    draws = []
    for step in range(40):
        draws.append(model.train_loops_at(step))
    assert set(draws) == {6, 7, 8, 9, 10}  # b + U{0..4}
    assert draws == [model.train_loops_at(s) for s in range(40)]  # seeded by the step
    assert tiny(True, loops=6, loops_start=6).train_loops_at(3) == 6  # none by default


def test_extra_loops_warm_up_linearly_from_none():
    model = tiny(True, loops=6, loop_window=2, loops_start=6, loops_extra=8, loops_extra_warmup=100)
    assert [model.loops_extra_at(s) for s in (0, 12, 13, 50, 99, 100, 5000)] == [
        0,
        0,
        1,
        4,
        7,
        8,
        8,
    ]
    assert model.train_loops_at(0) == 6  # no extra loop can be drawn at step 0
    early = {model.train_loops_at(s) for s in range(0, 25)}  # at most 6 + 1
    late = {model.train_loops_at(s) for s in range(100, 300)}
    assert early <= {6, 7} and late == set(range(6, 15))


def test_the_cpu_looped_model_has_at_most_an_eighth_of_the_standard_models_parameters():
    from lit_loops.cli import LitLoopsCLI

    counts = {}
    for name, stack in (("standard", STANDARD), ("looped", LOOPED)):
        counts[name] = LitLoopsCLI(args=configs(stack), run=False).model.num_parameters
    assert counts["looped"] * 8 <= counts["standard"], counts


def test_a_prompt_longer_than_the_positions_fails_clearly():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "sequence length=20 is invalid: must not exceed the model's positions (max_len=18)"
        ),
    ):
        tiny(False).predict(torch.randn(1, 10, 4), torch.randn(1, 10))


def test_step_schedule_checks_its_arguments():
    assert StepSchedule("points", 11, 41, 2, 2000).value(10**6) == 41
    with pytest.raises(ValueError, match="points_every=0"):
        StepSchedule("points", 11, 41, 2, 0)


# --- learning ----------------------------------------------------------------------------
# --- evaluation ----------------------------------------------------------------------------
def test_evaluation_writes_error_curves_bands_and_loop_curves(in_tmp):
    """Two tiny checkpoints (standard, looped) through the evaluation: every distribution's
    CSV and PNG, least squares exact from d examples on, bands around the means, and the
    loop curve out to 4b."""
    from lit_loops.experiments.icl.evaluate import evaluate

    ckpts = []
    for stack in (STANDARD, LOOPED):
        run = cli(
            "fit",
            *configs(stack),
            "--data.init_args.d=3",
            "--data.init_args.n_points=7",
            "--data.init_args.dims_start=null",
            "--data.init_args.points_start=null",
            "--data.init_args.val_size=32",
            "--model.init_args.net.d_model=16",
            "--trainer.max_steps=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        )  # fmt: skip
        ckpts.append(run.trainer.checkpoint_callback.last_model_path)
    results = evaluate(
        ckpts,
        in_tmp / "eval",
        prompts=64,
        dists=("standard", "orthant", "noisy_y"),
        baselines=["least_squares", "zero", "3nn"],
        log=lambda _: None,
        read_loops=0,  # only at b (the papers' count: test_evaluation_of_every_task_...)
    )
    for dist in ("standard", "orthant", "noisy_y"):
        assert (in_tmp / "eval" / f"errors_{dist}.png").stat().st_size > 0
        rows = (in_tmp / "eval" / f"errors_{dist}.csv").read_text().splitlines()
        assert rows[0] == "predictor,examples,mean,lo,hi" and len(rows) == 1 + 5 * 7
    mean, lo, hi = results["standard"]["least_squares"]
    assert (mean[3:] < 1e-6).all() and (mean[:2] > 0.1).all()
    assert (lo <= mean + 1e-9).all() and (mean <= hi + 1e-9).all()
    assert results["orthant"]["least_squares"][0][3:].max() < 1e-6  # still linear
    assert results["noisy_y"]["least_squares"][0][3:].min() > 0.01  # noise is not fitted
    zero_mean = results["standard"]["zero"][0]
    assert 0.6 < zero_mean.mean() < 1.4  # the normaliser makes the zero predictor ~1
    (label,) = results["loops"]  # only the looped model has a loop curve
    b = yaml.safe_load(LOOPED[-1].read_text())["model"]["init_args"]["loops"]
    assert label.startswith(f"looped L1 b{b}")
    loop_mean, _, _ = results["loops"][label]
    assert len(loop_mean) == 4 * b and results["loops_b"] == {label: b}
    assert (in_tmp / "eval" / "loops.csv").exists() and (in_tmp / "eval" / "loops.png").exists()


TASK_CONFIGS = {
    "sparse_linear_regression": CONFIGS / "icl" / "cpu_sparse_linear_regression.yaml",
    "decision_tree": CONFIGS / "icl" / "cpu_decision_tree.yaml",
    "relu_2nn_regression": CONFIGS / "icl" / "cpu_relu_2nn_regression.yaml",
}


def tiny_task_checkpoints(task: str, steps: int = 2) -> list[str]:
    """A tiny standard and a tiny looped checkpoint of the task's CPU config stacks."""
    extra = [] if task == "linear_regression" else [TASK_CONFIGS[task]]
    ckpts = []
    for stack in ([*STANDARD, *extra], [*LOOPED, *extra]):
        run = cli(
            "fit",
            *configs(stack),
            "--data.init_args.val_size=16",
            "--model.init_args.net.d_model=16",
            f"--trainer.max_steps={steps}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        )  # fmt: skip
        assert run.datamodule.hparams.task == task
        ckpts.append(run.trainer.checkpoint_callback.last_model_path)
    return ckpts


@pytest.mark.parametrize("task", ["linear_regression", *TASK_CONFIGS])
def test_evaluation_of_every_task_with_every_baseline_of_both_settings(in_tmp, task):
    """Each task's CPU stacks (tiny, 2 steps) through the evaluation with every baseline of
    both named settings, and the looped model read at b and at a papers'-style count: one
    row per predictor and example count, finite, and the loop curve out to that count."""
    from lit_loops.experiments.icl.baselines import BASELINE_SETTINGS
    from lit_loops.experiments.icl.evaluate import evaluate, summary_figure

    ckpts = tiny_task_checkpoints(task)
    folders = []
    for setting, lists in BASELINE_SETTINGS.items():
        out = in_tmp / setting
        results = evaluate(
            ckpts, out, prompts=8, expensive_prompts=2, log=lambda _: None,
            baseline_setting=setting, read_loops=20,
        )  # fmt: skip
        curves = results["standard"]
        looped = [name for name in curves if name.startswith("looped")]
        assert len(looped) == 2 and looped[1] == f"{looped[0]} @20"
        assert set(lists[task]) <= set(curves) and len(curves) == 3 + len(lists[task])
        for name, (mean, _, _) in curves.items():
            assert mean.shape == (11,) and torch.isfinite(mean).all(), name
        rows = (out / "errors_standard.csv").read_text().splitlines()
        assert len(rows) == 1 + len(curves) * 11
        ((loop_mean, _, _),) = results["loops"].values()
        assert len(loop_mean) == max(20, 4 * 12)  # 4b = 48 > 20
        folders.append(out)
    figure = summary_figure(folders, in_tmp / "summary.png", titles=list(BASELINE_SETTINGS))
    assert figure.stat().st_size > 0


def test_the_papers_read_loops_per_task():
    from lit_loops.experiments.icl.evaluate import PAPER_READ_LOOPS, PAPER_READ_LOOPS_DEFAULT

    assert PAPER_READ_LOOPS == {"decision_tree": 200} and PAPER_READ_LOOPS_DEFAULT == 500


# Per task, overrides that shrink the CPU config to seconds: d = 2 (k = 1 for the sparse
# task, depth 1 for trees, 4 hidden units for ReLU nets), a tiny model, 1200 steps.
SHRUNK = {
    "linear_regression": ["--data.init_args.d=2"],
    "sparse_linear_regression": ["--data.init_args.d=2", "--data.init_args.sparsity=1"],
    "decision_tree": ["--data.init_args.d=2", "--data.init_args.depth=1"],
    "relu_2nn_regression": ["--data.init_args.d=2", "--data.init_args.hidden=4"],
}


@pytest.mark.parametrize("task", list(SHRUNK))
def test_each_task_cpu_config_loss_falls(in_tmp, task):
    """The task's CPU config stack (``cpu.yaml``, plus the task's file), shrunk (``SHRUNK``:
    d = 2, 5 examples, a 2-layer model 32 wide, 1200 steps): the normalised validation
    error falls well below the zero predictor's on the same prompts (where an untrained
    model sits; measured: 0.6-0.77 of it)."""
    extra = [TASK_CONFIGS[task]] if task in TASK_CONFIGS else []
    run = cli(
        "fit",
        *configs([*STANDARD, *extra]),
        *SHRUNK[task],
        "--data.init_args.n_points=5",
        "--data.init_args.dims_start=null",
        "--data.init_args.points_start=null",
        "--data.init_args.val_size=2048",
        "--data.init_args.val_batch_size=2048",
        "--model.init_args.net.d_model=32",
        "--model.init_args.net.n_layers=2",
        "--model.init_args.net.n_heads=2",
        "--model.init_args.optim.lr=0.003",
        "--model.init_args.optim.warmup_steps=50",
        "--model.init_args.optim.schedule=constant",
        "--trainer.max_steps=1200",
        "--trainer.val_check_interval=1200",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    )  # fmt: skip
    assert run.datamodule.hparams.task == task
    (val,) = run.datamodule.val_batches()
    zero = (val["ys"].pow(2) / val["norm"]).mean().item()
    nse = run.trainer.callback_metrics["val/nse"].item()
    print(f"{task}: val/nse {nse:.3f}, zero predictor {zero:.3f}")
    assert nse < 0.85 * zero, (nse, zero)


def test_evaluation_rejects_a_checkpoint_of_another_experiment(in_tmp):
    from lit_loops.experiments.icl.evaluate import load

    run = cli("fit", *TINY_OOCL, "--trainer.max_steps=1")
    with pytest.raises(ValueError, match="checkpoint=.*in-context learning run"):
        load(run.trainer.checkpoint_callback.last_model_path)
    with pytest.raises(ValueError, match="must be an existing .ckpt file"):
        load(in_tmp / "missing.ckpt")
