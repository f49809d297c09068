"""Byte-level (256-token) samples for the Block-Recurrent Transformer, from three sources.

A batch: ``{"tokens": (B, sample_len) long in 0..255}``, and for ``recall`` also
``"loss_mask"`` and ``"answer_mask"``, both ``(B, sample_len)`` bool: the token at a
masked position is a recall answer, predicted from the positions before it; only those
count in the loss (everything else in a recall sample is random by construction). The
model cuts each sample into segments of its ``max_seq_len`` (``sample_len - 1`` must be a
multiple of it; the model checks).

Sources:

* ``stdlib`` (the default, needs nothing from outside): the ``.py`` files of the running
  Python's standard library, split by file (``split_seed``) into train / validation, each
  split the files' bytes joined by ``b"\\n\\n"``. The file list is sorted before the
  shuffle, so the split is the same on every run of the same Python.
* ``enwik8`` (``path``: the ``.zip``, a ``.gz`` or the raw file): the first 100M bytes, the
  standard 90M / 5M / 5M train / validation / test split.
* ``recall``: a synthetic long-range task drawn on the fly; layout below
  (``RecallBatchMaker``).

Training batches are random crops (corpora) or fresh samples (recall) from the shared
on-the-fly stream (``lit_loops.data``: one generator per seed, rank and step). Validation
is fixed: crops at evenly spaced offsets of the validation split (the same on every rank
and run), or recall batches drawn once from ``val_seed``. ``test_dataloader`` covers the
whole enwik8 test split (windows overlapping by one token, so each byte but the first is
predicted once); for the other sources it is the validation set.
"""

from __future__ import annotations

import functools
import gzip
import os
import random
import sys
import sysconfig
import zipfile
from pathlib import Path

import lightning as L
import torch

from lit_loops.checks import check, check_choice, check_float, check_int, check_positive_int, fail
from lit_loops.data import fixed_loader, train_stream
from lit_loops.schedules import StepSchedule

NUM_TOKENS = 256
SOURCES = ("stdlib", "enwik8", "recall")

ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_SPLIT = (90_000_000, 5_000_000, 5_000_000)  # train / validation / test bytes
ENWIK8_HOW = (
    f"download {ENWIK8_URL} and pass --data.init_args.path=/path/to/enwik8.zip "
    "(the .zip, a .gz or the unpacked file)"
)

FILE_SEPARATOR = b"\n\n"
MAX_CORPUS_BYTES = 32_000_000

# recall alphabets, pairwise disjoint so that a sample parses without its layout
KEYS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
EXTRA_KEYS = bytes(range(128, 256))  # beyond 26 kinds of key: the non-ASCII bytes
MAX_RECALL_KEYS = len(KEYS) + len(EXTRA_KEYS)
VALUES = b"0123456789"  # the first ``recall_values`` of them
PAIR_END = ord(";")
QUERY_MARK = ord("?")
DISTRACTORS = b"abcdefghijklmnopqrstuvwxyz "
PAIR_TOKENS = 3  # key, value, ";"   /   "?", key, value


def _as_tensor(data: bytes) -> torch.Tensor:
    """``bytes`` -> (n,) uint8 (bytearray: frombuffer needs a writable buffer)."""
    if not data:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


# ----------------------------------------------------------------------------- stdlib corpus


def stdlib_files() -> tuple[Path, list[str]]:
    """The standard library's root and its ``.py`` files (relative POSIX paths, sorted),
    without ``site-packages`` and anything inside the running virtual environment."""
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    venv = Path(sys.prefix).resolve() if sys.prefix != sys.base_prefix else None
    if venv is not None and root.is_relative_to(venv):
        venv = None  # a stdlib kept inside the venv is still the stdlib
    files = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = [
            d
            for d in dirs
            if d not in ("site-packages", "dist-packages", "__pycache__")
            and not (venv is not None and (here / d).resolve().is_relative_to(venv))
        ]
        files += [(here / n).relative_to(root).as_posix() for n in names if n.endswith(".py")]
    return root, sorted(files)


def stdlib_corpus(
    val_fraction: float = 0.05, split_seed: int = 0, max_bytes: int = MAX_CORPUS_BYTES
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[str, ...]]:
    """``(train_bytes, val_bytes, train_files, val_files)`` of the stdlib corpus.

    The sorted file list is shuffled with ``split_seed``; the first ``val_fraction`` of it
    (at least one file) is the validation split. ``max_bytes`` then caps the total: the
    validation files are kept first, the training files fill the rest, in shuffled order,
    skipping any file that no longer fits. The bytes are (n,) uint8 tensors, cached per
    setting (read-only: shared by every caller); the files are paths relative to the stdlib.
    """
    check_float("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_int("split_seed", split_seed)
    check_positive_int("max_bytes", max_bytes)
    return _stdlib_corpus(float(val_fraction), split_seed, max_bytes)


@functools.lru_cache(maxsize=4)  # one key per setting, however the caller spelled it
def _stdlib_corpus(
    val_fraction: float, split_seed: int, max_bytes: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[str, ...]]:
    root, files = stdlib_files()
    check(
        len(files) >= 2,
        "source",
        "stdlib",
        f"needs at least 2 .py files under {root}, found {len(files)}; use source='enwik8'",
    )
    order = list(files)
    random.Random(split_seed).shuffle(order)  # stable across Python versions
    n_val = min(max(1, round(val_fraction * len(order))), len(order) - 1)
    budget = max_bytes
    splits: list[tuple[list[str], list[bytes]]] = []
    for part in (order[:n_val], order[n_val:]):
        kept, chunks = [], []
        for name in part:
            sep = len(FILE_SEPARATOR) if chunks else 0
            try:  # the size first: files over the budget are never read
                if (root / name).stat().st_size + sep > budget:
                    continue
                data = (root / name).read_bytes()
            except OSError:  # unreadable (permissions): not part of the corpus
                continue
            if len(data) + sep > budget:  # changed since the stat
                continue
            budget -= len(data) + sep
            kept.append(name)
            chunks.append(data)
        splits.append((kept, chunks))
    (val_files, val_chunks), (train_files, train_chunks) = splits
    return (
        _as_tensor(FILE_SEPARATOR.join(train_chunks)),
        _as_tensor(FILE_SEPARATOR.join(val_chunks)),
        tuple(train_files),
        tuple(val_files),
    )


# ----------------------------------------------------------------------------------- enwik8


def _read_prefix(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a zip's (single or ``enwik8``) member, a gzip or a raw file."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            if not names:
                fail("path", str(path), "is a zip archive with no file in it")
            name = "enwik8" if "enwik8" in names else names[0]
            with zf.open(name) as member:
                return member.read(n)
    if magic.startswith(b"\x1f\x8b"):
        with gzip.open(path, "rb") as f:
            return f.read(n)
    with open(path, "rb") as f:
        return f.read(n)


def check_enwik8_path(path: str | os.PathLike | None) -> Path:
    check(path is not None, "path", path, f"source='enwik8' needs the file: {ENWIK8_HOW}")
    p = Path(path).expanduser()
    check(p.is_file(), "path", str(path), f"no such file; {ENWIK8_HOW}")
    return p


def read_enwik8(
    path: str | os.PathLike, split: tuple[int, int, int] = ENWIK8_SPLIT
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train, val, test)`` (n,) uint8 tensors: consecutive slices of ``split`` bytes from
    the start of the file (the standard 90M / 5M / 5M), cached per file and split."""
    return _read_enwik8(str(check_enwik8_path(path).resolve()), tuple(split))


@functools.lru_cache(maxsize=2)
def _read_enwik8(
    path: str, split: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = Path(path)
    need = sum(split)
    data = _read_prefix(p, need)
    check(
        len(data) >= need,
        "path",
        str(path),
        f"holds {len(data):,} bytes, fewer than the {need:,} of the enwik8 split {split}: "
        f"is it the whole enwik8? ({ENWIK8_URL})",
    )
    whole = _as_tensor(data)
    a, b, _ = split
    return whole[:a], whole[a : a + b], whole[a + b : need]


# ------------------------------------------------------------------------------------ crops


class CropBatchMaker:
    """Picklable ``make(generator, step) -> {"tokens": (B, sample_len) long}``: random crops
    of a byte split (start offsets uniform over every full crop)."""

    def __init__(self, data: torch.Tensor, batch_size: int, sample_len: int) -> None:
        check(
            len(data) >= sample_len,
            "sample_len",
            sample_len,
            f"must fit in the training split ({len(data):,} bytes)",
        )
        self.data, self.batch_size, self.sample_len = data, batch_size, sample_len

    def __call__(self, g: torch.Generator, step: int = 0) -> dict:
        starts = torch.randint(
            len(self.data) - self.sample_len + 1, (self.batch_size,), generator=g
        )  # (B,)
        return {"tokens": crops(self.data, starts, self.sample_len)}


def crops(data: torch.Tensor, starts: torch.Tensor, sample_len: int) -> torch.Tensor:
    """(n,) uint8 bytes, (B,) starts -> (B, sample_len) long."""
    return data[starts[:, None] + torch.arange(sample_len)].long()


def evenly_spaced_batches(
    data: torch.Tensor, sample_len: int, n_batches: int, batch_size: int, name: str
) -> list[dict]:
    """``n_batches`` batches of ``batch_size`` crops at evenly spaced offsets, first and last
    crops at the two ends of ``data`` (integer arithmetic: exact for any length)."""
    check(
        len(data) >= sample_len,
        "sample_len",
        sample_len,
        f"must fit in the {name} split ({len(data):,} bytes)",
    )
    n = n_batches * batch_size
    starts = torch.arange(n) * (len(data) - sample_len) // max(n - 1, 1)  # (n,)
    return [{"tokens": crops(data, s, sample_len)} for s in starts.split(batch_size)]


def tiled_batches(data: torch.Tensor, sample_len: int, batch_size: int, name: str) -> list[dict]:
    """Windows that overlap by one token (the next window's first token is only context),
    so every byte but the first is predicted exactly once; a tail shorter than a window
    is dropped."""
    check(
        len(data) >= sample_len,
        "sample_len",
        sample_len,
        f"must fit in the {name} split ({len(data):,} bytes)",
    )
    stride = sample_len - 1
    starts = torch.arange(0, len(data) - sample_len + 1, stride)
    return [{"tokens": crops(data, s, sample_len)} for s in starts.split(batch_size)]


# ----------------------------------------------------------------------------------- recall


def recall_keys(kinds: int) -> bytes:
    """The recall task's key alphabet of ``kinds`` bytes: the first ``kinds`` uppercase
    letters, then non-ASCII bytes 128.. (disjoint from values, distractors and marks)."""
    return (KEYS + EXTRA_KEYS)[:kinds]


def recall_min_length(pairs: int, gap: int = 0) -> int:
    """The shortest sample holding ``pairs`` pairs, ``gap`` distractors and the queries."""
    return 2 * PAIR_TOKENS * pairs + gap


class RecallBatchMaker:
    """Picklable ``make(generator, step) -> batch`` of the synthetic recall task.

    One sample of ``L = sample_len`` tokens, ``P = pairs``, ``G = gap`` (default
    ``L - 6P``, as large as the sample allows)::

        [0, s)              distractors (lowercase letters and spaces); s = L - 6P - G
        [s, s + 3P)         pair j at s + 3j: key, value, ";"   (distinct keys from an
                            alphabet of ``keys`` kinds, values digits "0".. of ``values``
                            kinds)
        [s + 3P, L - 3P)    G distractors
        [L - 3P, L)         query q at L - 3P + 3q: "?", key, value (the answer), the
                            pairs' keys in a random order

    ``answer_mask`` and ``loss_mask`` are True at the P answer positions
    ``L - 3P + 3q + 2``. ``min_recall_gap = G + 4`` is the least ``a - v`` over answers at
    ``a`` and their pairs' values at ``v`` (the first query asking the last pair). The answer
    is predicted at ``a - 1``, which in a block of ``W`` tokens with ``M`` tokens of XL
    memory sees at most ``W - 1 + M`` back: every answer needs the recurrence when
    ``min_recall_gap > W + M``. Chance accuracy is ``1 / values``.

    ``pairs_schedule`` (a ``StepSchedule`` ending at ``pairs``): a curriculum over the pairs
    per sample, the layout above with the step's ``P`` (the gap, when not given, grows as
    ``P`` shrinks; ``min_recall_gap`` is the final ``P``'s, the smallest).
    """

    def __init__(
        self,
        batch_size: int,
        sample_len: int,
        pairs: int,
        values: int,
        gap: int | None = None,
        keys: int = len(KEYS),
        pairs_schedule: StepSchedule | None = None,
    ) -> None:
        self.batch_size, self.sample_len = batch_size, sample_len
        self.pairs, self.values, self.fixed_gap = pairs, values, gap
        self.pairs_schedule = pairs_schedule
        self.min_recall_gap = self.layout(pairs)[0] + 4
        self.keys = torch.tensor(list(recall_keys(keys)))
        self.distractors = torch.tensor(list(DISTRACTORS))

    def layout(self, pairs: int) -> tuple[int, int, int]:
        """``(gap, pair_start, query_start)`` of a sample with ``pairs`` pairs."""
        L = self.sample_len
        gap = L - recall_min_length(pairs) if self.fixed_gap is None else self.fixed_gap
        query_start = L - PAIR_TOKENS * pairs
        return gap, query_start - gap - PAIR_TOKENS * pairs, query_start

    def __call__(self, g: torch.Generator, step: int = 0) -> dict:
        B, L = self.batch_size, self.sample_len
        P = self.pairs if self.pairs_schedule is None else self.pairs_schedule.value(step)
        _, pair_start, query_start = self.layout(P)
        tokens = self.distractors[torch.randint(len(DISTRACTORS), (B, L), generator=g)]
        # distinct keys per row: the first P of a random permutation of the alphabet
        n_keys = len(self.keys)
        keys = self.keys[torch.rand(B, n_keys, generator=g).argsort(dim=1)[:, :P]]  # (B, P)
        values = torch.randint(self.values, (B, P), generator=g) + VALUES[0]  # (B, P)
        pair = tokens[:, pair_start : pair_start + PAIR_TOKENS * P].view(B, P, 3)
        pair[:, :, 0], pair[:, :, 1], pair[:, :, 2] = keys, values, PAIR_END
        order = torch.rand(B, P, generator=g).argsort(dim=1)  # (B, P) query order
        query = tokens[:, query_start:].view(B, P, 3)
        query[:, :, 0] = QUERY_MARK
        query[:, :, 1], query[:, :, 2] = keys.gather(1, order), values.gather(1, order)
        answer = torch.zeros(B, L, dtype=torch.bool)
        answer[:, torch.arange(query_start + 2, L, PAIR_TOKENS)] = True
        return {"tokens": tokens, "loss_mask": answer, "answer_mask": answer.clone()}


# ------------------------------------------------------------------------------- DataModule


class BlockRecurrentDataModule(L.LightningDataModule):
    """Byte-level samples of ``sample_len`` tokens for the Block-Recurrent Transformer.

    Args:
        source: ``stdlib`` (the standard library's Python source, the default), ``enwik8``
            (needs ``path``) or ``recall`` (synthetic, see ``RecallBatchMaker``).
        path: the enwik8 file (``.zip``, ``.gz`` or raw): only for ``source='enwik8'``.
        sample_len: tokens per sample; ``sample_len - 1`` must be a multiple of the
            model's ``max_seq_len``.
        batch_size: samples per training step.
        val_batches, val_batch_size: the validation set (``val_batch_size`` None: the
            training ``batch_size``).
        val_fraction, split_seed, max_corpus_bytes: the stdlib split by file (see
            ``stdlib_corpus``).
        enwik8_split: train / validation / test bytes read from the start of the file.
        recall_pairs, recall_values, recall_gap: the recall task's key-value pairs per
            sample, kinds of value (2..10) and distractors between the last pair and the
            first query (None: as many as the sample allows).
        recall_keys: kinds of key (``recall_pairs`` .. 154; 26, the uppercase letters, by
            default; beyond 26 the non-ASCII bytes, see ``recall_keys``).
        recall_pairs_start, recall_pairs_every: a curriculum over the pairs per training
            sample: ``recall_pairs_start`` pairs, one more every ``recall_pairs_every``
            steps up to ``recall_pairs`` (``StepSchedule``, logged by ``CurriculumLog``;
            None: ``recall_pairs`` throughout). Validation always has ``recall_pairs``.
        seed, val_seed, num_workers: as in every DataModule here.
    """

    def __init__(
        self,
        source: str = "stdlib",
        path: str | None = None,
        sample_len: int = 513,
        batch_size: int = 8,
        val_batches: int = 8,
        val_batch_size: int | None = None,
        val_fraction: float = 0.05,
        split_seed: int = 0,
        max_corpus_bytes: int = MAX_CORPUS_BYTES,
        enwik8_split: tuple[int, int, int] = ENWIK8_SPLIT,
        recall_pairs: int = 4,
        recall_values: int = 10,
        recall_gap: int | None = None,
        recall_keys: int = len(KEYS),
        recall_pairs_start: int | None = None,
        recall_pairs_every: int = 500,
        seed: int = 0,
        val_seed: int = 12345,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_choice("source", source, SOURCES)
        check_int("sample_len", sample_len, min_value=2)
        check_positive_int("batch_size", batch_size)
        check_positive_int("val_batches", val_batches)
        if val_batch_size is not None:
            check_positive_int("val_batch_size", val_batch_size)
        check_float(
            "val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False
        )
        check_int("split_seed", split_seed)
        check_positive_int("max_corpus_bytes", max_corpus_bytes)
        check(
            isinstance(enwik8_split, (tuple, list))
            and len(enwik8_split) == 3
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in enwik8_split),
            "enwik8_split",
            enwik8_split,
            "must be three positive integers: train, validation and test bytes",
        )
        enwik8_split = tuple(enwik8_split)
        check_int("recall_keys", recall_keys, min_value=1, max_value=MAX_RECALL_KEYS)
        check_int("recall_pairs", recall_pairs, min_value=1, max_value=recall_keys)
        if recall_pairs_start is not None:
            check_int("recall_pairs_start", recall_pairs_start, min_value=1)
        check_positive_int("recall_pairs_every", recall_pairs_every)
        check_int("recall_values", recall_values, min_value=2, max_value=len(VALUES))
        if recall_gap is not None:
            check_int("recall_gap", recall_gap, min_value=0)
        check_int("seed", seed)
        check_int("val_seed", val_seed)
        check_int("num_workers", num_workers, min_value=0)
        if source == "enwik8":
            check_enwik8_path(path)
            check(
                sample_len <= min(enwik8_split),
                "sample_len",
                sample_len,
                f"must fit in every enwik8 split {enwik8_split}",
            )
        else:
            check(path is None, "path", path, "is only read by source='enwik8'")
        if source == "recall":
            need = recall_min_length(recall_pairs, recall_gap or 0)
            check(
                sample_len >= need,
                "sample_len",
                sample_len,
                f"must be at least {need} for source='recall': 3 tokens for each of the "
                f"recall_pairs={recall_pairs} pairs and as many for their queries, plus "
                f"recall_gap={recall_gap or 0} between them",
            )
        self.curriculum = None  # what CurriculumLog reads: the pairs per training sample
        if recall_pairs_start is not None:
            check(
                source == "recall", "recall_pairs_start", recall_pairs_start,
                "is only read by source='recall'",
            )  # fmt: skip
            self.curriculum = StepSchedule(
                "recall_pairs", recall_pairs_start, recall_pairs, 1, recall_pairs_every
            )
        self.save_hyperparameters()
        self._splits: dict[str, torch.Tensor] | None = None
        self._val: list[dict] | None = None
        self._test: list[dict] | None = None

    @property
    def val_batch_size(self) -> int:
        hp = self.hparams
        return hp.batch_size if hp.val_batch_size is None else hp.val_batch_size

    def model_args(self) -> dict:
        hp = self.hparams
        gap = self.recall_maker(1).min_recall_gap if hp.source == "recall" else None
        return {"num_tokens": NUM_TOKENS, "sample_len": hp.sample_len, "min_recall_gap": gap}

    def splits(self) -> dict[str, torch.Tensor]:
        """The corpus' byte splits, (n,) uint8 each: ``train``, ``val`` and ``test``
        (stdlib: ``test`` is ``val``). Read once per process and setting."""
        hp = self.hparams
        check(hp.source != "recall", "source", hp.source, "has no byte corpus")
        if self._splits is None:
            if hp.source == "stdlib":
                train, val, _, _ = stdlib_corpus(
                    hp.val_fraction, hp.split_seed, hp.max_corpus_bytes
                )
                test = val
            else:
                train, val, test = read_enwik8(str(hp.path), tuple(hp.enwik8_split))
            self._splits = {"train": train, "val": val, "test": test}
        return self._splits

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.source != "recall":  # read (and check) the corpus before any step
            self.splits()

    def recall_maker(self, batch_size: int, train: bool = False) -> RecallBatchMaker:
        hp = self.hparams
        return RecallBatchMaker(
            batch_size,
            hp.sample_len,
            hp.recall_pairs,
            hp.recall_values,
            hp.recall_gap,
            hp.recall_keys,
            self.curriculum if train else None,
        )

    def batch_maker(self) -> CropBatchMaker | RecallBatchMaker:
        hp = self.hparams
        if hp.source == "recall":
            return self.recall_maker(hp.batch_size, train=True)
        return CropBatchMaker(self.splits()["train"], hp.batch_size, hp.sample_len)

    def train_dataloader(self):
        return train_stream(self, self.batch_maker())

    def val_batches(self) -> list[dict]:
        if self._val is None:
            hp = self.hparams
            if hp.source == "recall":
                make = self.recall_maker(self.val_batch_size)
                g = torch.Generator().manual_seed(hp.val_seed)
                self._val = [make(g) for _ in range(hp.val_batches)]
            else:
                self._val = evenly_spaced_batches(
                    self.splits()["val"], hp.sample_len, hp.val_batches, self.val_batch_size, "val"
                )
        return self._val

    def test_batches(self) -> list[dict]:
        """enwik8: the whole test split (``tiled_batches``); otherwise the validation set."""
        if self.hparams.source != "enwik8":
            return self.val_batches()
        if self._test is None:
            self._test = tiled_batches(
                self.splits()["test"], self.hparams.sample_len, self.val_batch_size, "test"
            )
        return self._test

    def val_dataloader(self):
        return fixed_loader(self.val_batches())

    def test_dataloader(self):
        return fixed_loader(self.test_batches())
