"""The Block-Recurrent Transformer: shapes for every option, what memories and states
carry, causality, cached decoding against the full forward, truncated BPTT, the recall
task's reach, bad settings, and a short run whose loss falls."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import CONFIGS, cli
from lit_loops.experiments.block_recurrent.data import BlockRecurrentDataModule
from lit_loops.experiments.block_recurrent.model import (
    BlockRecurrentConfig,
    BlockRecurrentTransformer,
    RecurrentTrainerWrapper,
)
from lit_loops.experiments.block_recurrent.module import BlockRecurrentModule
from lit_loops.nn.sampling import beam_search

SMALL = dict(
    num_tokens=64,
    dim=32,
    depth=3,
    dim_head=16,
    heads=2,
    max_seq_len=16,
    block_width=8,
    num_state_vectors=4,
)
OPTIONS = {
    "default": {},
    "compressed": dict(use_compressed_mem=True, compressed_mem_factor=2),
    "xpos+lstm": dict(use_xpos=True, gate="lstm"),
    "two recurrent, read lower": dict(recurrent_layers=(2, 3), read_recurrent_layers=(1, 3)),
    "no recurrent layer": dict(recurrent_layers=()),
    "math attention": dict(use_flash_attn=False),
    "all qk norm": dict(all_layers_qk_norm=True),
    "reference attention": dict(qk_norm_scale=None, use_xpos=True, qk_norm_order="norm_first"),
    "norm first, compressed, all qk norm": dict(
        qk_norm_order="norm_first",
        use_compressed_mem=True,
        compressed_mem_factor=2,
        all_layers_qk_norm=True,
    ),
}


def model(**options) -> BlockRecurrentTransformer:
    torch.manual_seed(0)
    return BlockRecurrentTransformer(**{**SMALL, **options}).eval()


def tokens(n: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, SMALL["num_tokens"], (batch, n), generator=torch.Generator().manual_seed(seed)
    )


def segments(m: BlockRecurrentTransformer, seq: torch.Tensor, mems=None, states=None):
    """Logits of ``seq`` fed one max_seq_len segment per call, carrying the stream."""
    outs = []
    for s in range(0, seq.shape[1], m.max_seq_len):
        logits, mems, states = m(seq[:, s : s + m.max_seq_len], mems, states)
        outs.append(logits)
    return torch.cat(outs, dim=1), mems, states


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_shapes_for_every_option(options):
    m = model(**options)
    logits, mems, states = segments(m, tokens(48))  # 3 segments, 6 blocks
    assert logits.shape == (2, 48, 64)
    memory = 8 + (8 // 2 if options.get("use_compressed_mem") else 0)  # XL (+ compressed)
    assert len(mems) == 3 and all(mem.shape == (2, 2, memory, 16) for mem in mems)
    n_recurrent = len(options.get("recurrent_layers", (1,)))
    assert len(states) == n_recurrent and all(s.shape == (2, 4, 32) for s in states)
    assert all(not t.requires_grad for t in [*mems, *states])  # handed over detached
    loss, _, _ = m(tokens(17), return_loss=True)
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_cached_decoding_equals_the_full_forward(options):
    """Tokens fed in uneven pieces through the cache (crossing blocks and segments) give
    the logits of the segment-by-segment forward."""
    m = model(**options)
    seq = tokens(40)
    full, _, _ = segments(m, seq)
    cache = m.new_cache(2)
    pieces, i = [], 0
    for n in [3, 1, 7, 5, 1, 1, 2, 9, 11]:
        pieces.append(m.run(seq[:, i : i + n], cache))
        i += n
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_greedy_generation_equals_argmax_of_full_forwards():
    m = model()
    prime = tokens(5)
    out = m.generate(prime, 14, temperature=0)
    seq = prime
    for _ in range(14):  # the slow way: a full forward per new token
        logits, _, _ = segments(m, seq)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq[:, 5:])


def test_sampling_respects_top_k():
    m = model()
    g = torch.Generator().manual_seed(0)
    out = m.generate(tokens(4), 30, temperature=1.0, top_k=1, generator=g)
    assert torch.equal(out, m.generate(tokens(4), 30, temperature=0))  # top-1 is greedy


class FullForwardDecoder:
    """The decoder of ``nn.sampling`` the slow way: a full segment-by-segment forward per
    token, nothing cached (so nothing to reorder)."""

    def __init__(self, m: BlockRecurrentTransformer) -> None:
        self.m = m

    def first(self, seq: torch.Tensor) -> torch.Tensor:
        return segments(self.m, seq)[0][:, -1]

    next = first

    def reorder(self, index: torch.Tensor) -> None:
        pass


@pytest.mark.parametrize("new", [6, 14])  # within the first segment, and across blocks
def test_beam_search_through_the_cache_equals_beam_search_on_full_forwards(new):
    m = model()
    prime = tokens(4, batch=1)
    with torch.no_grad():
        slow = beam_search(FullForwardDecoder(m), prime, new, beams=3)[:, 4:]
    assert torch.equal(m.generate(prime, new, strategy="beam", beams=3), slow)
    greedy = m.generate(prime, new, temperature=0)
    assert torch.equal(m.generate(prime, new, strategy="beam", beams=1), greedy)


def test_beam_search_on_a_batch_of_prompts():
    m = model()
    prime = tokens(4)  # 2 rows
    with torch.no_grad():
        slow = beam_search(FullForwardDecoder(m), prime, 6, beams=3)[:, 4:]
    assert torch.equal(m.generate(prime, 6, strategy="beam", beams=3), slow)


def test_a_config_or_its_fields_build_the_same_model():
    fields = {k: v for k, v in SMALL.items() if k != "num_tokens"}
    cfg = BlockRecurrentConfig(**fields)
    assert (cfg.state_vectors, cfg.writes, cfg.reads) == (4, [1], [1])  # derived: depth // 2
    assert cfg.num_state_vectors == 4 and cfg.recurrent_layers is None  # None stays None
    torch.manual_seed(0)
    a = BlockRecurrentTransformer(64, cfg)
    b = model()
    assert a.cfg == b.cfg
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    assert BlockRecurrentConfig(depth=6, block_width=32, max_seq_len=64).state_vectors == 32
    with pytest.raises(ValueError, match="not both"):
        BlockRecurrentTransformer(64, cfg, dim=16)


def test_causal_within_and_across_blocks():
    m = model()
    seq = tokens(16)
    base, _, _ = m(seq)
    for t in (3, 8, 12):  # inside block 0, the first token of block 1, inside block 1
        changed = seq.clone()
        changed[:, t] = (changed[:, t] + 1) % 64
        out, _, _ = m(changed)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6)
        assert not torch.allclose(out[:, t:], base[:, t:], atol=1e-6)


def changed_in_first_segment(position: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    seq = tokens(n)
    changed = seq.clone()
    changed[:, position] = (changed[:, position] + 1) % 64
    return seq, changed


def test_memories_and_states_carry_the_earlier_segment():
    """A change in segment 1 reaches segment 2 only through the carried memories and
    states: with them, segment 2's logits change; without them, they cannot."""
    m = model()
    seq, changed = changed_in_first_segment(12)
    second = [segments(m, s)[0][:, 16:] for s in (seq, changed)]
    assert not torch.allclose(*second, atol=1e-6)
    alone = [m(s[:, 16:])[0] for s in (seq, changed)]  # nothing carried
    assert torch.allclose(*alone) and torch.allclose(alone[0], m(seq[:, 16:])[0])


def test_beyond_the_xl_memory_only_the_state_carries():
    """Token 2 is 38+ tokens before the last block (40..47): out of attention's reach,
    8 + 3 layers x 8 = 32 (each layer adds one block of XL memory). Without a recurrent
    layer, changing it leaves that block's logits alone; with one, the state carries it."""
    seq, changed = changed_in_first_segment(2, n=48)
    for options, reaches in (({"recurrent_layers": ()}, False), ({}, True)):
        m = model(**options)
        assert m.attention_reach == 32
        late = [segments(m, s)[0][:, 40:] for s in (seq, changed)]
        assert torch.allclose(*late, atol=1e-6) != reaches


def test_per_segment_backward_gives_the_full_gradients():
    """The carry is detached, so backpropagating each segment's loss at once gives the
    gradients of one backward over the mean loss (the module relies on it)."""
    m = model().train()
    wrapper = RecurrentTrainerWrapper(m)
    seq = tokens(33)
    wrapper(seq).backward()
    full = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    for logits, targets, _ in wrapper.segment_logits(seq):
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets)
        (loss / 2).backward()
    for a, p in zip(full, m.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_dropping_memories_and_states_cuts_the_carry():
    m = model().train()
    seq = tokens(33)
    dropped = RecurrentTrainerWrapper(m, xl_memories_dropout=1.0, state_dropout=1.0)
    second = [logits for logits, _, s in dropped.segment_logits(seq) if s == 1][0]
    assert torch.allclose(second, m(seq[:, 16:32])[0], atol=1e-6)
    kept = RecurrentTrainerWrapper(m)
    second_kept = [logits for logits, _, s in kept.segment_logits(seq) if s == 1][0]
    assert not torch.allclose(second_kept, second, atol=1e-6)


def test_flash_and_math_attention_agree_on_cpu():
    seq = tokens(40)
    a = segments(model(use_flash_attn=True), seq)[0]
    b = segments(model(use_flash_attn=False), seq)[0]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(block_width=5), "max_seq_len=16 is invalid: must be a multiple of block_width=5"),
        (dict(recurrent_layers=(4,)), "recurrent_layers=4"),
        (dict(recurrent_layers=(2, 2)), "must not repeat"),
        (dict(read_recurrent_layers=(3,), recurrent_layers=(2,)), "read_recurrent_layers"),
        (dict(use_compressed_mem=True, compressed_mem_factor=3), "must divide block_width"),
        (dict(gate="gru"), "gate='gru'"),
        (dict(dim_head=15), "dim_head=15 is invalid: must be even"),
        (
            dict(ff_mult=0),
            re.escape("ff_mult=0 is invalid: must be a finite number in (0.0, inf]"),
        ),
        (dict(num_state_vectors=0), "num_state_vectors=0 is invalid"),
        (
            dict(qk_norm_scale=0.0),
            re.escape("qk_norm_scale=0.0 is invalid: must be a finite number in (0.0, inf]"),
        ),
        (dict(qk_norm_scale=-8.0), "qk_norm_scale=-8.0 is invalid"),
        (dict(qk_norm_scale=float("inf")), "qk_norm_scale=inf is invalid"),
        (dict(qk_norm_scale="8"), "qk_norm_scale='8' is invalid"),
        (
            dict(qk_norm_order="after"),
            re.escape("qk_norm_order='after' is invalid: must be one of ['rotary_first', "),
        ),
        (dict(use_xpos="yes"), "use_xpos='yes' is invalid: must be a bool"),
        (dict(all_layers_qk_norm=1), "all_layers_qk_norm=1 is invalid: must be a bool"),
    ],
)
def test_bad_model_settings_say_what_is_wrong(options, match):
    with pytest.raises(ValueError, match=match):
        BlockRecurrentTransformer(**{**SMALL, **options})


def with_learned_qk_scales(m: BlockRecurrentTransformer) -> BlockRecurrentTransformer:
    """``m`` with its q/k scales (ones at init) drawn at random, as after training."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(("q_scale", "k_scale")):
                p.add_(0.3 * torch.randn_like(p))
    return m


@pytest.mark.parametrize(
    "option",
    [
        dict(qk_norm_scale=None),
        dict(qk_norm_scale=2.0),
        dict(use_xpos=True),
        dict(qk_norm_order="norm_first"),
    ],
    ids=str,
)
def test_each_attention_option_changes_the_forward(option):
    """Each option, alone, at the same weights, changes the logits and the states (a
    layer's states are written from the keys/values of its input, so the attention
    options reach the states of a recurrent layer above another one: layer 2 here)."""
    seq = tokens(32)
    layers = dict(recurrent_layers=(1, 2))
    a, _, sa = segments(with_learned_qk_scales(model(**layers)), seq)
    b, _, sb = segments(with_learned_qk_scales(model(**layers, **option)), seq)
    assert (a - b).abs().max() > 1e-3
    assert (sa[1] - sb[1]).abs().max() > 1e-5


def test_the_default_temperature_is_8_and_none_is_1_over_sqrt_dim_head():
    """``qk_norm_scale=None`` is SDPA's default, ``1/sqrt(dim_head)``, the reference's."""
    seq = tokens(32)
    default = segments(model(), seq)[0]
    assert torch.equal(default, segments(model(qk_norm_scale=8.0), seq)[0])
    none = segments(model(qk_norm_scale=None), seq)[0]
    assert torch.allclose(none, segments(model(qk_norm_scale=16**-0.5), seq)[0], atol=1e-6)


def test_the_orders_agree_while_the_qk_scales_are_one_and_xpos_is_off():
    """Rotations keep lengths, so normalising before or after them is the same until the
    per-channel q/k scales are learned (or xPos rescales): the orders differ in training,
    not at init."""
    seq = tokens(32)
    a = segments(model(), seq)[0]
    b = segments(model(qk_norm_order="norm_first"), seq)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_a_too_long_call_is_refused():
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model()(tokens(17))


def test_the_recall_task_is_out_of_attention_reach():
    """In the shipped recall config, with no recurrent layer, the answers' logits do not
    move when the pairs' values change: attention and XL memory cannot see them."""
    dm = BlockRecurrentDataModule(source="recall", sample_len=129, batch_size=4)
    batch = dm.batch_maker()(torch.Generator().manual_seed(0), 0)
    maker = dm.recall_maker(4)
    m = BlockRecurrentTransformer(
        num_tokens=256, dim=32, depth=2, dim_head=16, heads=2, max_seq_len=128,
        block_width=32, recurrent_layers=(),
    ).eval()  # fmt: skip
    assert dm.model_args()["min_recall_gap"] > m.attention_reach
    seq = batch["tokens"]
    changed = seq.clone()
    _, pair_start, query_start = maker.layout(4)
    values = torch.arange(pair_start + 1, pair_start + 3 * 4, 3)
    changed[:, values] = (changed[:, values] - ord("0") + 1) % 10 + ord("0")
    answers = torch.arange(query_start + 2, 129, 3) - 1  # where each answer is predicted
    a, b = (m(s[:, :128])[0][:, answers] for s in (seq, changed))
    assert torch.allclose(a, b, atol=1e-6)


NET = dict(
    dim=32, depth=2, heads=2, dim_head=16, max_seq_len=16, block_width=8, num_state_vectors=4,
    recurrent_layers=[2],
)  # fmt: skip


def module(net=None, **kwargs) -> BlockRecurrentModule:
    """``net``: BlockRecurrentConfig fields over NET; ``kwargs``: the module's arguments."""
    args = dict(num_tokens=256, sample_len=33, net={**NET, **(net or {})})
    return BlockRecurrentModule(**{**args, **kwargs})


def test_the_module_builds_its_model_from_net_and_optim():
    m = module(optim={"lr": 3e-4})
    assert m.net == BlockRecurrentConfig(**NET) and m.model.cfg == m.net
    assert m.hparams.net["block_width"] == 8 and m.hparams.net["num_state_vectors"] == 4
    assert m.optim.lr == 3e-4 and m.optim.optimizer == "adam"  # the rest: the module's defaults
    assert m.segments == 2 and m.num_parameters == sum(p.numel() for p in m.model.parameters())
    # a partial net overrides the module's own defaults (dim 256, depth 4, ...)
    partial = BlockRecurrentModule(num_tokens=256, sample_len=513, net={"dim": 64})
    assert (partial.net.dim, partial.net.depth, partial.net.max_seq_len) == (64, 4, 512)
    assert partial.net.recurrent_layers is None and partial.model.write_layer == [1]


def test_the_module_generates_through_the_sample_interface():
    """The interface of GenerateSample: a prompt from a batch, prompt + continuation, text."""
    torch.manual_seed(0)
    m = module()
    batch = {"tokens": torch.tensor([list(b"hello world, again and again!")])}
    prompt = m.sample_prompt(batch, 5)
    assert m.decode(prompt[0].tolist()) == "hello"
    out = m.generate(prompt, 7, strategy="greedy")
    assert out.shape == (1, 12) and torch.equal(out[:, :5], prompt)
    assert torch.equal(out[:, 5:], m.model.generate(prompt, 7, temperature=0))
    assert isinstance(m.decode(out[0].tolist()), str)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(sample_len=40),
            "data.sample_len=40 is invalid: must be a multiple of model.max_seq_len=16",
        ),
        (
            dict(min_recall_gap=24),
            "min_recall_gap=24 is invalid: must exceed the model's attention reach, 24",
        ),
        (
            dict(optim={"schedule": "plateau"}),
            re.escape("optim.schedule='plateau' is invalid: must be one of ['constant', 'cosine']"),
        ),
        (
            dict(optim={"eps": -1.0}),
            re.escape("optim.eps=-1.0 is invalid: must be a finite number in (0.0, inf]"),
        ),
        (
            dict(optim={"lr": 1e-3, "min_lr": 0.1}),
            re.escape("optim.min_lr=0.1 is invalid: must be a finite number in [0.0, 0.001]"),
        ),
        (
            dict(net={"block_width": 5}),
            "max_seq_len=16 is invalid: must be a multiple of block_width=5",
        ),
        (
            dict(net={"ff_mult": 0.0}),
            re.escape("ff_mult=0.0 is invalid: must be a finite number in (0.0, inf]"),
        ),
        (dict(accumulate_grad_batches=0), "accumulate_grad_batches=0"),
        (dict(xl_memories_dropout=1.5), "xl_memories_dropout=1.5"),
        (dict(gradient_clip_val=0.0), "gradient_clip_val=0.0 is invalid"),
        (dict(num_tokens=None), "num_tokens=None is invalid: is set from the DataModule"),
    ],
)
def test_bad_module_settings_say_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        module(**kwargs)


def test_a_missing_enwik8_file_is_named_with_where_to_get_it():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "path='missing/enwik8.zip' is invalid: no such file; download "
            "http://mattmahoney.net/dc/enwik8.zip"
        ),
    ):
        BlockRecurrentDataModule(source="enwik8", path="missing/enwik8.zip")


def test_cpu_config_loss_falls_on_the_embedded_corpus(in_tmp):
    """A short run of cpu.yaml, shrunk: the byte loss falls well below uniform (ln 256)."""
    run = cli(
        "fit",
        "--config", CONFIGS / "block_recurrent" / "cpu.yaml",
        "--model.init_args.net.dim=64", "--model.init_args.net.depth=2",
        "--model.init_args.net.recurrent_layers=[2]", "--model.init_args.net.dim_head=16",
        "--model.init_args.net.max_seq_len=64", "--model.init_args.net.block_width=32",
        "--model.init_args.net.num_state_vectors=16", "--model.init_args.optim.warmup_steps=10",
        "--data.init_args.sample_len=129", "--data.init_args.batch_size=8",
        "--data.init_args.val_batches=2", "--data.init_args.val_batch_size=8",
        "--trainer.max_steps=60", "--trainer.val_check_interval=60",
        "--trainer.callbacks+=lit_loops.callbacks.GenerateSample",
        "--trainer.callbacks.every_n_steps=60", "--trainer.callbacks.length=16",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    )  # fmt: skip
    metrics = run.trainer.callback_metrics
    assert run.trainer.global_step == 60
    assert float(metrics["val/loss"]) < 3.3  # uniform over bytes: ln 256 = 5.55
    assert {"val/bpc", "val/loss_segment0", "val/loss_segment1"} <= set(metrics)
    samples = list(in_tmp.rglob("samples.txt"))
    assert samples and "--- generated" in samples[0].read_text()


def test_same_parameter_count_as_the_reference_package():
    """Our layers hold the reference's parameters, shape for shape in total (the package
    is installed by ``make bench`` only; without it this test skips)."""
    reference = pytest.importorskip("block_recurrent_transformer_pytorch")
    settings = dict(
        num_tokens=256, dim=64, depth=4, dim_head=16, heads=4, max_seq_len=64,
        block_width=32, num_state_vectors=8, recurrent_layers=(3,),
    )  # fmt: skip
    ours = BlockRecurrentTransformer(**settings)
    ref = reference.BlockRecurrentTransformer(**settings)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(ref)
