"""Bad input through the real CLI, as a user would type it: every invalid setting fails
before training, with one message naming the argument, the value and what is allowed.

Two kinds of failure:

* a value of the wrong type (a word for an int, a float for an int) is refused by the
  parser: ``SystemExit(2)``, the message on stderr names the key, the type and the value;
* a value of the right type that is not allowed (out of range, unknown name, sizes that do
  not fit together, a missing file) raises ``ValueError("<name>=<value> is invalid:
  <what is allowed>")`` from the experiment's own checks (``lit_loops.checks``) while the
  DataModule and the LightningModule are built, before the Trainer exists.

Every case runs with ``Trainer.fit`` replaced by a tripwire and checks that no run folder
was made: nothing trains, nothing is written. All of it is the fast tier.
"""

from __future__ import annotations

import re

import pytest
from lightning.pytorch import Trainer

from conftest import CONFIGS, cli
from lit_loops.experiments.subleq.assembler import PROGRAMS, assemble
from lit_loops.experiments.subleq.machine import MachineSpec, State, step

SUBLEQ = CONFIGS / "subleq" / "cpu.yaml"
ICL = CONFIGS / "icl" / "cpu_linear_regression_standard.yaml"
ICL_LOOPED = CONFIGS / "icl" / "cpu_linear_regression_looped.yaml"
SEQUENCES = CONFIGS / "sequences" / "cpu.yaml"
OOCL = CONFIGS / "oocl" / "cpu.yaml"
BLOCK = CONFIGS / "block_recurrent" / "cpu.yaml"
RECALL = CONFIGS / "block_recurrent" / "recall_cpu.yaml"

QUIET = [
    "--trainer.max_steps=1",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def case(config, args: str, message: str, id: str):
    return pytest.param(config, args.split(), message, id=id)


# (config, arguments, the message: "<name>=<value> is invalid: <what is allowed>")
VALUE_ERRORS = [
    # --- SUBLEQ ---------------------------------------------------------------------------
    case(SUBLEQ, "--data.init_args.n=12",
         "n=12 is invalid: must be a power of two >= 4", id="subleq-n-not-power-of-two"),
    case(SUBLEQ, "--data.init_args.N=63",  # memory words of 63 bits do not fit an int64
         "N=63 is invalid: must be an integer in [2, 62]", id="subleq-N-too-many-bits"),
    case(SUBLEQ, "--data.init_args.s=8 --data.init_args.m=8",
         "m=8 is invalid: must leave at least 1 instruction token: s + m <= n - 1 = 15 (s=8)",
         id="subleq-memory-does-not-fit"),
    case(SUBLEQ, "--data.init_args.tasks=[]",
         "tasks=[] is invalid: must name at least one task of ['copy', 'pc', 'step']",
         id="subleq-no-task"),
    case(SUBLEQ, "--model.init_args.loss=hinge",
         "loss='hinge' is invalid: must be one of ['l1', 'l2', 'huber', 'bce']",
         id="subleq-unknown-loss"),
    case(SUBLEQ, "--model.init_args.lr=-0.001",
         "lr=-0.001 is invalid: must be a finite number in (0.0, inf]", id="subleq-negative-lr"),
    # --- in-context learning ----------------------------------------------------------------
    case(ICL, "--data.init_args.task=cubic_regression",
         "task='cubic_regression' is invalid: must be one of ['linear_regression', ",
         id="icl-unknown-task"),
    case(ICL, "--model.init_args.dropout=2",
         "dropout=2.0 is invalid: must be a finite number in [0.0, 1.0)", id="icl-dropout-2"),
    case(ICL, "--data.init_args.dims_start=9",
         "dims_start=9 is invalid: must not exceed the final value 5", id="icl-dims-start-above-d"),
    case(ICL, "--data.init_args.curriculum_every=0",
         "curriculum_every=0 is invalid: must be an integer in [1, inf]",
         id="icl-curriculum-every-0"),
    case(ICL_LOOPED, "--model.init_args.loops_extra_warmup=-5",
         "loops_extra_warmup=-5 is invalid: must be an integer in [0, inf]",
         id="icl-loops-extra-warmup-negative"),
    case(ICL, "--model.init_args.n_points=5",  # the prompt's positions are the data's
         "model.init_args.n_points=5 is invalid: the data decides it", id="icl-positions-by-hand"),
    # --- integer sequences ------------------------------------------------------------------
    case(SEQUENCES, "--data.init_args.window=100",
         "window=100 is invalid: must be an integer in [2, 64]", id="sequences-window-too-long"),
    case(SEQUENCES, "--model.init_args.max_len=4",  # a window of 8 on a model of 4 positions
         "model.init_args.max_len=4 is invalid: the data decides it "
         "(lit_loops.experiments.sequences.data.SequenceDataModule gives max_len=8)",
         id="sequences-window-longer-than-positions"),
    case(SEQUENCES, "--data.init_args.replay=-0.1",
         "replay=-0.1 is invalid: must be a finite number in [0.0, 1.0)",
         id="sequences-negative-replay"),
    case(SEQUENCES, "--data.init_args.families=[fibonacci_like,primes]",
         "families='primes' is invalid: must be one of ['constant', ",
         id="sequences-unknown-family"),
    case(SEQUENCES, "--model.init_args.embedding=onehot",
         "embedding='onehot' is invalid: must be one of ['tuple', 'learned', 'binary']",
         id="sequences-unknown-embedding"),
    case(SEQUENCES, "--model.init_args.d_model=2 --model.init_args.n_heads=4",
         "n_heads=4 is invalid: must divide d_model=2", id="sequences-heads-do-not-divide"),
    # --- out-of-context learning ------------------------------------------------------------
    case(OOCL, "--data.init_args.holdout1=1.5",
         "holdout1=1.5 is invalid: must be a finite number in [0.0, 1.0)", id="oocl-holdout-1.5"),
    case(OOCL, "--data.init_args.p=10",
         "p=10 is invalid: must be a prime (2, 3, 5, 7, ..., 97, 101, ...)", id="oocl-p-not-prime"),
    case(OOCL, "--data.init_args.op=pow",
         "op='pow' is invalid: must be one of ['ssq', 'add', 'sub', 'mul']", id="oocl-unknown-op"),
    case(OOCL, "--data.init_args.holdout1=0.999",
         "holdout1=0.999 is invalid: leaves no training pairs at p=31; lower it",
         id="oocl-holdout-leaves-nothing"),
    case(OOCL, "--data.init_args.batch_size=-32",
         "batch_size=-32 is invalid: must be an integer in [1, inf]", id="oocl-negative-batch"),
    # --- block-recurrent transformer --------------------------------------------------------
    case(BLOCK, "--model.init_args.block_width=100",
         "max_seq_len=256 is invalid: must be a multiple of block_width=100",
         id="block-width-does-not-divide"),
    case(BLOCK, "--data.init_args.source=enwik8 --data.init_args.path=missing/enwik8.zip",
         "path='missing/enwik8.zip' is invalid: no such file; download "
         "http://mattmahoney.net/dc/enwik8.zip", id="block-enwik8-missing-file"),
    case(BLOCK, "--data.init_args.sample_len=514",
         "data.sample_len=514 is invalid: must be a multiple of model.max_seq_len=256, plus 1",
         id="block-sample-len-does-not-fit"),
    case(BLOCK, "--model.init_args.ff_mult=0",
         "ff_mult=0.0 is invalid: must be a finite number in (0.0, inf]", id="block-ff-mult-0"),
    case(BLOCK, "--model.init_args.eps=-1",
         "eps=-1.0 is invalid: must be a finite number in (0.0, inf]", id="block-negative-eps"),
    case(BLOCK, "--model.init_args.min_lr=0.1",
         "min_lr=0.1 is invalid: must be a finite number in [0.0, 0.001]",
         id="block-min-lr-above-lr"),
    case(RECALL, "--data.init_args.recall_gap=10",  # the answer 14 tokens from its value
         "min_recall_gap=14 is invalid: must exceed the model's attention reach, 96 tokens",
         id="recall-gap-within-attention"),
]  # fmt: skip

# (config, arguments, what stderr must say: the key, the expected type and the value)
TYPE_ERRORS = [
    case(SUBLEQ, "--data.init_args.N=abc",
         "Parser key \"N\":\n  Expected a <class 'int'>. Got value: abc", id="subleq-N-word"),
    case(SEQUENCES, "--data.init_args.window=8.5",
         "Parser key \"window\":\n  Expected a <class 'int'>. Got value: 8.5",
         id="sequences-window-float"),
    case(BLOCK, "--model.init_args.ff_mult=big",
         "Parser key \"ff_mult\":\n  Expected a <class 'float'>. Got value: big",
         id="block-ff-mult-word"),
    case(ICL_LOOPED, "--model.init_args.looped=maybe",
         "Parser key \"looped\":\n  Expected a <class 'bool'>. Got value: maybe",
         id="icl-looped-not-bool"),
]  # fmt: skip


@pytest.fixture
def no_training(in_tmp, monkeypatch):
    """A tripwire on ``Trainer.fit``: a bad setting that got that far is a failure."""

    def fit(self, *args, **kwargs):
        raise AssertionError("Trainer.fit was reached: the bad setting was not caught")

    monkeypatch.setattr(Trainer, "fit", fit)
    yield in_tmp
    assert not (in_tmp / "runs").exists(), "a run folder was written"


@pytest.mark.parametrize("config, args, message", VALUE_ERRORS)
def test_a_bad_value_fails_before_training_naming_argument_value_and_what_is_allowed(
    no_training, config, args, message
):
    with pytest.raises(ValueError) as err:
        cli("fit", "--config", config, *args, *QUIET)
    assert message in str(err.value)
    # one message in the house style, not an error from inside torch
    assert re.search(r"\S+=\S.* is invalid: ", str(err.value))
    assert not any("site-packages/torch/" in str(entry.path) for entry in err.traceback)


@pytest.mark.parametrize("config, args, message", TYPE_ERRORS)
def test_a_value_of_the_wrong_type_is_refused_by_the_parser(
    no_training, capsys, config, args, message
):
    with pytest.raises(SystemExit) as exit_:
        cli("fit", "--config", config, *args, *QUIET)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert re.sub(r"\n\s+", "\n  ", message) in re.sub(r"\n\s+", "\n  ", err), err


def test_memory_values_that_need_more_than_N_bits_are_refused():
    """No CLI argument sets memory words (the data draws them within N bits); a program's
    words, the inputs given to it and a hand-made state are checked against N."""
    spec = MachineSpec(n=16, s=4, m=4, N=4)
    with pytest.raises(ValueError, match=re.escape(".word BIG=8 is invalid: must fit in N=4")):
        assemble(spec, ".word BIG 8\nhalt")
    program = PROGRAMS["add"].assemble(spec)
    with pytest.raises(ValueError, match=re.escape("word A=-9 is invalid: must fit in N=4 bits")):
        program.initial_state({"A": -9})
    state = program.initial_state()
    too_big = State(state.mem + 100, state.inst, state.pc)
    with pytest.raises(ValueError, match=r"state.mem=1\d\d is invalid: N=4 bits signed"):
        step(spec, too_big)


def test_a_model_error_is_the_only_message(no_training):
    with pytest.raises(ValueError) as err:
        cli("fit", "--config", OOCL, "--model.init_args.norm=batchnorm", *QUIET)
    assert str(err.value) == "norm='batchnorm' is invalid: must be one of ['layernorm', 'none']"
