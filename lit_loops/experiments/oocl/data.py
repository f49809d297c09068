"""Out-of-context learning on modular arithmetic: vocabulary, splits and batch generation.

Vocabulary (``2p + 4`` tokens)::

    0 .. p-1      operands, group 1
    p .. 2p-1     their aliases, group 2 (token i+p is the alias of i)
    2p            "="        (end)
    2p+1          true       ("not-random")
    2p+2          false      ("random"; reserved, unused by the current formats)
    2p+3          define

Examples are 5 tokens; the model predicts the last from position 3::

    table 1   [true,   x,      y,      =, f(x, y)]
    table 2   [true,   x + p,  y + p,  =, f(x, y) + p]
    linkage   [define, define, a,      =, b]          (a, b) = (i, i+p) or (i+p, i)
    mixed     [true,   x,      y + p,  =, f(x, y) + p]   and [true, x + p, y, =, f + p]
              (code-switched table-2 cells, opt-in: ``mixed_cells``)

(the linkages' other forms: ``linkage_examples``.)
"""

from __future__ import annotations

import lightning as L
import torch

from lit_loops.checks import (
    check,
    check_choice,
    check_float,
    check_int,
    check_positive_int,
    is_prime,
)
from lit_loops.data import fixed_loader, train_stream

SEQ_LEN = 5
ANSWER_FROM = 3  # the answer (token 4) is predicted from position 3
PARTS = ("table1", "table2", "linkage", "mixed")  # the keys of a training batch ("mixed": opt-in)
TABLES = ("table1", "table2")  # the keys of validation batches (one loader each)

OPS = {
    "ssq": lambda x, y, p: (x * x + y * y) % p,
    "add": lambda x, y, p: (x + y) % p,
    "sub": lambda x, y, p: (x - y) % p,
    "mul": lambda x, y, p: (x * y) % p,
}
SYMMETRIC_OPS = ("ssq", "add", "mul")


class Vocab:
    """Token ids for a prime ``p``."""

    def __init__(self, p: int) -> None:
        self.p = p
        self.equals = 2 * p
        self.true = 2 * p + 1
        self.false = 2 * p + 2
        self.define = 2 * p + 3
        self.size = 2 * p + 4


def table_examples(pairs: torch.Tensor, table: int, p: int, op: str) -> torch.Tensor:
    """``(K, 2)`` operand pairs in ``0..p-1`` -> ``(K, 5)`` examples of table ``table`` (0 or 1)."""
    vocab = Vocab(p)
    x, y = pairs[:, 0], pairs[:, 1]
    offset = table * p  # table 2 writes every operand and result as its alias
    out = torch.empty(len(pairs), SEQ_LEN, dtype=torch.long)
    out[:, 0] = vocab.true
    out[:, 1] = x + offset
    out[:, 2] = y + offset
    out[:, 3] = vocab.equals
    out[:, 4] = OPS[op](x, y, p) + offset
    return out


def mixed_examples(pairs: torch.Tensor, p: int, op: str) -> torch.Tensor:
    """Code-switched table-2 cells: one operand replaced by its group-1 alias, the answer
    still in group 2. ``(K, 2)`` pairs -> ``(2K, 5)``: ``[true, x, y+p, =, f+p]`` and
    ``[true, x+p, y, =, f+p]``."""
    cells = table_examples(pairs, 1, p, op)  # [true, x+p, y+p, =, f+p]
    first, second = cells.clone(), cells.clone()
    first[:, 1] -= p
    second[:, 2] -= p
    return torch.cat([first, second])


LINKAGE_FORMS = ("define", "operand", "compare")


def linkage_examples(p: int, form: str = "define") -> torch.Tensor:
    """The linkages between ``i`` and its alias ``i + p``, both directions, in ``form``:

    * ``define``: ``[define, define, a, =, b]``, ``(a, b) = (i, i+p)`` or ``(i+p, i)``: ``(2p, 5)``;
    * ``operand``: the same with ``a`` in either operand slot, also
      ``[define, a, define, =, b]``: ``(4p, 5)``;
    * ``compare``: ``[define, a, b, =, true|false]``, true for the ``2p`` alias pairs and
      false for every pair of one number and another's alias, the true ones repeated
      ``p - 1`` times so that both answers are equally frequent: ``(4p(p-1), 5)``.
    """
    check_choice("linkage form", form, LINKAGE_FORMS)
    vocab = Vocab(p)
    i = torch.arange(p)
    a = torch.cat([i, i + p])
    b = torch.cat([i + p, i])

    def rows(first, second, third, answer):  # columns 0, 1, 2 and 4 -> (K, 5)
        n = max(len(c) for c in (first, second, third, answer) if not isinstance(c, int))
        full = lambda v: torch.full((n,), v) if isinstance(v, int) else v  # noqa: E731
        return torch.stack(
            [full(first), full(second), full(third), full(vocab.equals), full(answer)], dim=1
        )

    if form == "define":
        return rows(vocab.define, vocab.define, a, b)
    if form == "operand":
        return torch.cat(
            [rows(vocab.define, vocab.define, a, b), rows(vocab.define, a, vocab.define, b)]
        )
    x, y = torch.meshgrid(i, i, indexing="ij")
    x, y = x.flatten()[x.flatten() != y.flatten()], y.flatten()[x.flatten() != y.flatten()]
    false_a, false_b = torch.cat([x, x + p]), torch.cat([y + p, y])  # (2p(p-1),)
    true_rows = rows(vocab.define, a, b, vocab.true).repeat(p - 1, 1)
    return torch.cat([true_rows, rows(vocab.define, false_a, false_b, vocab.false)])


def split_pairs(
    p: int, holdout: float, seed: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the ``p^2`` ordered pairs into (train, held out), each ``(K, 2)``.

    ``round(holdout * N)`` pairs are held out, N counting ordered pairs, or unordered
    pairs when ``symmetric`` (then ``(x, y)`` and ``(y, x)`` go to the same side).
    """
    g = torch.Generator().manual_seed(seed)
    x, y = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    pairs = torch.stack([x.flatten(), y.flatten()], dim=1)  # (p*p, 2)
    if symmetric:
        pairs = pairs[pairs[:, 0] <= pairs[:, 1]]  # (p(p+1)/2, 2) unordered
    perm = torch.randperm(len(pairs), generator=g)
    n_held = round(holdout * len(pairs))
    held, train = pairs[perm[:n_held]], pairs[perm[n_held:]]
    if symmetric:  # add the mirror of every off-diagonal pair
        held = torch.cat([held, held[held[:, 0] != held[:, 1]].flip(1)])
        train = torch.cat([train, train[train[:, 0] != train[:, 1]].flip(1)])
    return train, held


class OOCLBatchMaker:
    """Draws a training batch: ``batch_size`` examples of each part, uniformly from its
    training split (with replacement). Picklable, so dataloader workers can use it."""

    def __init__(
        self, train_examples: dict[str, torch.Tensor], batch_size: int, full_batch: bool = False
    ) -> None:
        self.train_examples = train_examples
        self.batch_size = batch_size
        self.full_batch = full_batch

    def __call__(self, g: torch.Generator, step: int = 0) -> dict[str, torch.Tensor]:
        if self.full_batch:  # every training example of every part, every step
            return dict(self.train_examples)
        batch = {}
        for part, examples in self.train_examples.items():
            idx = torch.randint(len(examples), (self.batch_size,), generator=g)
            batch[part] = examples[idx]  # (B, 5)
        return batch


class OOCLDataModule(L.LightningDataModule):
    """Tables of ``op`` mod ``p`` in two token groups, plus the linkages between them.

    Args:
        p: the prime modulus.
        op: ``ssq`` = (x^2 + y^2) mod p, ``add``, ``sub`` or ``mul``.
        holdout1: fraction of table 1 held out for validation, in [0, 1).
        holdout2: fraction of table 2 held out for validation, in [0, 1), drawn
            independently of table 1.
        symmetric_holdout: hold out (x, y) and (y, x) together; the fractions then count
            unordered pairs (for symmetric ops a held-out pair's mirror otherwise leaks).
        split_seed: seed of the train/validation split.
        batch_size: training examples per part per step.
        val_batch_size: validation examples per batch.
        seed: seed of the training stream (with the rank and step).
        num_workers: dataloader worker processes for the training stream.
        mixed_cells: add the code-switched table-2 cells (``mixed_examples`` of table 2's
            training pairs) to training as the part ``mixed`` (weighted by the module's
            ``k_mixed``). Held-out table-1 cells stay unseen in every form; but the
            ``AliasAlignment`` mixed-cell probe is then no longer zero-shot.
        full_batch: every training example of every part at every step (``batch_size`` is
            then not used).
        linkage_form: how the linkages are written (``linkage_examples``): ``define``,
            ``operand`` (the alias in either operand slot) or ``compare`` (balanced
            true/false statements about pairs, the reserved false token).
    """

    def __init__(
        self,
        p: int = 97,
        op: str = "ssq",
        holdout1: float = 0.8,
        holdout2: float = 0.8,
        symmetric_holdout: bool = False,
        split_seed: int = 0,
        batch_size: int = 256,
        val_batch_size: int = 4096,
        seed: int = 0,
        num_workers: int = 0,
        linkage_form: str = "define",
        mixed_cells: bool = False,
        full_batch: bool = False,
    ) -> None:
        super().__init__()
        check_choice("linkage_form", linkage_form, LINKAGE_FORMS)
        check_int("p", p, min_value=2)
        check(is_prime(p), "p", p, "must be a prime (2, 3, 5, 7, ..., 97, 101, ...)")
        check_choice("op", op, OPS)
        check_float("holdout1", holdout1, 0.0, 1.0, high_inclusive=False)
        check_float("holdout2", holdout2, 0.0, 1.0, high_inclusive=False)
        # split_pairs holds out round(holdout * n) of n pairs (unordered when symmetric)
        n_pairs = p * (p + 1) // 2 if symmetric_holdout else p * p
        for name, holdout in (("holdout1", holdout1), ("holdout2", holdout2)):
            check(
                round(holdout * n_pairs) < n_pairs,
                name,
                holdout,
                f"leaves no training pairs at p={p}; lower it",
            )
        check_positive_int("batch_size", batch_size)
        check_positive_int("val_batch_size", val_batch_size)
        check_int("num_workers", num_workers, min_value=0)
        self.save_hyperparameters()
        self.vocab = Vocab(p)
        self.train_pairs: list[torch.Tensor] = []
        self.val_pairs: list[torch.Tensor] = []

    # Arguments of the model that the data decides; the CLI links them into the model.
    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def seq_len(self) -> int:
        return SEQ_LEN

    def model_args(self) -> dict[str, int]:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len}

    def setup(self, stage: str | None = None) -> None:
        if self.train_pairs:
            return
        hp = self.hparams
        for t, holdout in enumerate((hp.holdout1, hp.holdout2)):
            # The two tables are split independently: table t uses seed 2 * split_seed + t.
            train, held = split_pairs(hp.p, holdout, hp.split_seed * 2 + t, hp.symmetric_holdout)
            self.train_pairs.append(train)
            self.val_pairs.append(held)

    def _tables(self, pairs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        self.setup()
        return {
            table: table_examples(pairs[t], t, self.hparams.p, self.hparams.op)
            for t, table in enumerate(TABLES)
        }

    def train_examples(self) -> dict[str, torch.Tensor]:
        """Every training example of each part: ``{part: (K_part, 5)}``."""
        hp = self.hparams
        examples = {
            **self._tables(self.train_pairs),
            "linkage": linkage_examples(hp.p, hp.linkage_form),
        }
        if hp.mixed_cells:
            examples["mixed"] = mixed_examples(self.train_pairs[1], hp.p, hp.op)
        return examples

    def val_examples(self) -> dict[str, torch.Tensor]:
        """Every held-out example of each table: ``{table: (K_table, 5)}``."""
        return self._tables(self.val_pairs)

    def train_dataloader(self):
        maker = OOCLBatchMaker(
            self.train_examples(), self.hparams.batch_size, self.hparams.full_batch
        )
        return train_stream(self, maker)

    def val_dataloader(self):
        # One loader per table, in the order of TABLES; each batch is {table: (B, 5)}.
        loaders = []
        for table, examples in self.val_examples().items():
            chunks = examples.split(self.hparams.val_batch_size)
            loaders.append(fixed_loader([{table: chunk} for chunk in chunks]))
        return loaders

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader
