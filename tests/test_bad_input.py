"""Bad input through the real CLI, as a user would type it: an invalid setting fails
before training, with one message naming the argument, the value and what is allowed.

A handful of cases end to end, one per experiment plus the CLI's own (a nested
``net.*``/``optim.*`` value, a data-decided argument set by hand, sizes the data and the
model must agree on, a bad ``--ckpt_path``). Every constructor's own messages are tested
at the constructor, in the experiment's test file (``test_<experiment>.py``).

Two kinds of failure:

* a value of the wrong type (a word for a float) is refused by the parser:
  ``SystemExit(2)``, the message on stderr names the key, the type and the value;
* a value of the right type that is not allowed raises ``ValueError("<name>=<value> is
  invalid: <what is allowed>")`` from the experiment's own checks (``lit_loops.checks``)
  while the DataModule and the LightningModule are built, before the Trainer runs.

Every case runs with ``Trainer.fit`` replaced by a tripwire and checks that no run folder
was made: nothing trains, nothing is written. All of it is the fast tier.
"""

from __future__ import annotations

import functools
import re

import pytest
from lightning.pytorch import Trainer

from conftest import CONFIGS, cli

SUBLEQ = CONFIGS / "subleq" / "cpu.yaml"
ICL = CONFIGS / "icl" / "cpu.yaml"
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
    case(SUBLEQ, "--model.init_args.optim.lr=-0.001",  # a nested optimizer field
         "optim.lr=-0.001 is invalid: must be a finite number in (0.0, inf]", id="subleq-negative-lr"),
    case(ICL, "--model.init_args.n_points=5",  # the prompt's positions are the data's
         "model.init_args.n_points=5 is invalid: the data decides it", id="icl-positions-by-hand"),
    case(SEQUENCES, "--model.init_args.net.d_model=2 --model.init_args.net.n_heads=4",
         "net.n_heads=4 is invalid: must divide net.d_model=2", id="sequences-heads-do-not-divide"),
    case(OOCL, "--data.init_args.holdout1=0.999",
         "holdout1=0.999 is invalid: leaves no training pairs at p=31; lower it",
         id="oocl-holdout-leaves-nothing"),
    case(BLOCK, "--data.init_args.sample_len=514",  # the data's samples, the model's segments
         "data.sample_len=514 is invalid: must be a multiple of model.max_seq_len=256, plus 1",
         id="block-sample-len-does-not-fit"),
    case(RECALL, "--data.init_args.recall_gap=10",  # the answer 14 tokens from its value
         "min_recall_gap=14 is invalid: must exceed the model's attention reach, 96 tokens",
         id="recall-gap-within-attention"),
]  # fmt: skip

# (config, arguments, what stderr must say: the key, the expected type and the value)
TYPE_ERRORS = [
    case(BLOCK, "--model.init_args.net.ff_mult=big",
         "Parser key \"net.ff_mult\":\n  Expected a <class 'float'>. Got value: big",
         id="block-ff-mult-word"),
]  # fmt: skip


@pytest.fixture
def no_training(in_tmp, monkeypatch):
    """A tripwire on ``Trainer.fit``: a bad setting that got that far is a failure. It keeps
    ``fit``'s signature, from which the CLI builds the ``fit`` arguments (``--ckpt_path``)."""

    @functools.wraps(Trainer.fit)
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


def test_a_model_error_is_the_only_message(no_training):
    with pytest.raises(ValueError) as err:
        cli("fit", "--config", OOCL, "--model.init_args.net.norm=batchnorm", *QUIET)
    assert str(err.value) == "net.norm='batchnorm' is invalid: must be one of ['layernorm', 'none']"


def test_a_file_that_is_no_checkpoint_is_refused_before_training(no_training):
    not_a_checkpoint = no_training / "model.ckpt"
    not_a_checkpoint.write_text("weights: none\n")
    with pytest.raises(ValueError) as err:
        cli("fit", "--config", OOCL, *QUIET, "--ckpt_path", not_a_checkpoint)
    message = f"ckpt_path={str(not_a_checkpoint)!r} is invalid: not a readable checkpoint"
    assert str(err.value).startswith(message), err.value
