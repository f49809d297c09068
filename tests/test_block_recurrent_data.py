"""Block-recurrent byte data: the stdlib corpus and its split by file, enwik8 from .zip,
.gz and raw files, the synthetic recall task parsed back, and the streams' seeding."""

from __future__ import annotations

import gzip
import pickle
import re
import zipfile

import pytest
import torch

from lit_loops.data import OnTheFlyBatches
from lit_loops.experiments.block_recurrent import data as brd
from lit_loops.experiments.block_recurrent.data import (
    DISTRACTORS,
    ENWIK8_URL,
    BlockRecurrentDataModule,
    stdlib_corpus,
)

SMALL = 2_000_000  # a capped stdlib corpus: quick to build under several seeds


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def first(dm_or_maker, seed: int = 0, rank: int = 0, step: int = 0) -> dict:
    """The first batch of the training stream at (seed, rank, step)."""
    maker = dm_or_maker.batch_maker() if hasattr(dm_or_maker, "batch_maker") else dm_or_maker
    return next(iter(OnTheFlyBatches(maker, seed, rank, start_step=step)))


def is_crop(row: torch.Tensor, split: torch.Tensor) -> bool:
    return row.to(torch.uint8).numpy().tobytes() in split.numpy().tobytes()


# ------------------------------------------------------------------------------------ stdlib


def test_stdlib_batches_are_byte_crops_of_their_split():
    dm = BlockRecurrentDataModule(sample_len=65, batch_size=6, val_batches=3, val_batch_size=4)
    assert dm.model_args() == {"num_tokens": 256, "sample_len": 65, "min_recall_gap": None}
    tokens = next(iter(dm.train_dataloader()))["tokens"]
    assert tokens.shape == (6, 65) and tokens.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() <= 255
    splits = dm.splits()
    assert splits["train"].dtype == torch.uint8
    assert all(is_crop(row, splits["train"]) for row in tokens)
    val = dm.val_batches()
    assert [b["tokens"].shape for b in val] == [(4, 65)] * 3
    # evenly spaced: the first crop opens the split, the last closes it
    assert torch.equal(val[0]["tokens"][0], splits["val"][:65].long())
    assert torch.equal(val[-1]["tokens"][-1], splits["val"][-65:].long())
    assert dm.test_batches() is val
    assert BlockRecurrentDataModule(batch_size=5).val_batch_size == 5


def test_stdlib_split_is_disjoint_by_file_and_reproducible():
    train, val, train_files, val_files = stdlib_corpus(0.05, 0, SMALL)
    assert train_files and val_files and not set(train_files) & set(val_files)
    assert len(train) + len(val) <= SMALL
    assert not any("site-packages" in f for f in train_files + val_files)
    # each split is its files' bytes, joined
    root, _ = brd.stdlib_files()
    expected = brd.FILE_SEPARATOR.join((root / f).read_bytes() for f in val_files)
    assert val.numpy().tobytes() == expected
    # rebuilt from the disk (not the cache): the same split
    again = brd._stdlib_corpus.__wrapped__(0.05, 0, SMALL)
    assert again[2:] == (train_files, val_files)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    other = stdlib_corpus(0.05, 1, SMALL)
    assert set(other[3]) != set(val_files)


def test_stdlib_corpus_is_read_once_per_setting():
    a = BlockRecurrentDataModule(sample_len=33).splits()
    b = BlockRecurrentDataModule(sample_len=129, batch_size=2).splits()
    assert a["train"] is b["train"] and a["val"] is b["val"]


# ------------------------------------------------------------------------------------ enwik8

SPLIT = (3000, 500, 700)


def fake_enwik8(tmp_path, kind: str) -> tuple[str, bytes]:
    """A file of random bytes a bit longer than ``SPLIT`` (only its start may be read)."""
    data = bytes(torch.randint(256, (sum(SPLIT) + 123,), generator=gen(7)).tolist())
    if kind == "zip":
        path = tmp_path / "enwik8.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("enwik8", data)
    elif kind == "gz":
        path = tmp_path / "enwik8.gz"
        path.write_bytes(gzip.compress(data))
    else:
        path = tmp_path / "enwik8"
        path.write_bytes(data)
    return str(path), data


@pytest.mark.parametrize("kind", ["zip", "gz", "raw"])
def test_enwik8_splits_from_zip_gz_and_raw(tmp_path, kind):
    path, data = fake_enwik8(tmp_path, kind)
    dm = BlockRecurrentDataModule(
        source="enwik8", path=path, enwik8_split=SPLIT, sample_len=33, batch_size=4, val_batches=2
    )
    splits = dm.splits()
    a, b, c = SPLIT
    assert bytes(splits["train"].tolist()) == data[:a]
    assert bytes(splits["val"].tolist()) == data[a : a + b]
    assert bytes(splits["test"].tolist()) == data[a + b : a + b + c]
    tokens = next(iter(dm.train_dataloader()))["tokens"]
    assert tokens.shape == (4, 33) and all(is_crop(row, splits["train"]) for row in tokens)
    assert [v["tokens"].shape for v in dm.val_batches()] == [(4, 33)] * 2
    # the test set: windows overlapping by one token, every byte but the first predicted once
    test = torch.cat([t["tokens"] for t in dm.test_batches()])
    assert torch.equal(test[:, 1:].flatten(), splits["test"][1 : 1 + test.shape[0] * 32].long())
    assert (c - 1) - test.shape[0] * 32 < 32  # only a tail shorter than a window is left out


def test_enwik8_missing_or_short_file_says_where_to_get_it(tmp_path):
    with pytest.raises(ValueError, match=r"path=None.*mattmahoney\.net.*--data\.init_args\.path"):
        BlockRecurrentDataModule(source="enwik8")
    with pytest.raises(ValueError, match=r"no such file.*mattmahoney\.net"):
        BlockRecurrentDataModule(source="enwik8", path=str(tmp_path / "enwik8.zip"))
    path, _ = fake_enwik8(tmp_path, "zip")
    dm = BlockRecurrentDataModule(source="enwik8", path=path)  # the real 100M split
    with pytest.raises(ValueError, match="fewer than the 100,000,000"):
        dm.setup("fit")
    assert ENWIK8_URL == "http://mattmahoney.net/dc/enwik8.zip"


# ------------------------------------------------------------------------------------ recall


def parse_recall(row: torch.Tensor):
    """Pairs ``{key: (value, value position)}`` and queries ``[(key, answer, position)]``,
    found by the alphabets alone (not the layout)."""
    text = bytes(row.tolist())
    pairs = {m[1]: (m[2], m.start(2)) for m in re.finditer(rb"([A-Z])([0-9]);", text)}
    queries = [(m[1], m[2], m.start(2)) for m in re.finditer(rb"\?([A-Z])([0-9])", text)]
    keys = [m[1] for m in re.finditer(rb"([A-Z])([0-9]);", text)]
    return keys, pairs, queries, text


@pytest.mark.parametrize("gap", [None, 40])
def test_recall_answers_are_the_values_paired_earlier(gap):
    P, L = 5, 129
    dm = BlockRecurrentDataModule(
        source="recall",
        sample_len=L,
        batch_size=64,
        recall_pairs=P,
        recall_values=7,
        recall_gap=gap,
    )
    min_gap = dm.model_args()["min_recall_gap"]
    assert min_gap == (L - 6 * P if gap is None else gap) + 4
    batch = next(iter(dm.train_dataloader()))
    tokens, answer = batch["tokens"], batch["answer_mask"]
    assert tokens.shape == (64, L) and tokens.dtype == torch.long
    assert answer.dtype == torch.bool and torch.equal(batch["loss_mask"], answer)
    assert (answer.sum(1) == P).all() and not answer[:, 0].any()
    gaps = []
    for row, mask in zip(tokens, answer, strict=True):
        keys, pairs, queries, text = parse_recall(row)
        assert len(keys) == P and len(set(keys)) == P  # distinct keys
        assert sorted(q[0] for q in queries) == sorted(keys)  # each key queried once
        assert mask.nonzero().flatten().tolist() == [q[2] for q in queries]
        for key, value, pos in queries:
            assert value == pairs[key][0] and value[0] - ord("0") < 7
            assert pos - pairs[key][1] >= min_gap
            gaps.append(pos - pairs[key][1])
        assert text[-1:] == queries[-1][1]  # the queries end the sample
        if gap is None:
            assert text[:1] == keys[0]  # the pairs open it
    assert min(gaps) == min_gap  # attained: some first query asks the last pair


def test_recall_distractors_are_disjoint_from_the_task_tokens():
    dm = BlockRecurrentDataModule(source="recall", sample_len=65, recall_pairs=2, batch_size=32)
    batch = first(dm)
    is_task = torch.isin(
        batch["tokens"], torch.tensor(list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789;?"))
    )
    assert is_task.sum(1).eq(12).all()  # 2 pairs and 2 queries, 3 tokens each
    # every other token is a distractor
    assert torch.isin(batch["tokens"][~is_task], torch.tensor(list(DISTRACTORS))).all()


def test_recall_keys_beyond_the_letters_are_distinct_non_ascii_bytes():
    """54 kinds of key: A..Z then bytes 128..155; keys per sample still distinct, and every
    kind is drawn."""
    dm = BlockRecurrentDataModule(
        source="recall", sample_len=129, recall_pairs=4, recall_keys=54, batch_size=512
    )
    batch = first(dm)
    tokens = batch["tokens"]
    alphabet = torch.tensor(list(brd.recall_keys(54)))
    assert len(set(brd.recall_keys(54))) == 54 and max(brd.recall_keys(54)) == 155
    is_key = torch.isin(tokens, alphabet)
    assert is_key.sum(1).eq(8).all()  # 4 pairs + 4 queries, nothing else looks like a key
    assert set(tokens[is_key].unique().tolist()) == set(alphabet.tolist())
    for row in tokens[:16]:
        keys = row[torch.isin(row, alphabet)][:4]  # the pairs' keys (the queries follow)
        assert len(set(keys.tolist())) == 4
    few = BlockRecurrentDataModule(source="recall", sample_len=65, recall_pairs=2, recall_keys=2)
    keys = first(few)["tokens"]
    assert torch.isin(keys, torch.tensor(list(b"AB"))).sum(1).eq(4).all()  # both, every row


def test_recall_pairs_curriculum_grows_one_pair_at_a_time():
    dm = BlockRecurrentDataModule(
        source="recall", sample_len=129, recall_pairs=4, recall_pairs_start=1,
        recall_pairs_every=100, batch_size=8,
    )  # fmt: skip
    for step, pairs in [(0, 1), (99, 1), (100, 2), (250, 3), (300, 4), (10_000, 4)]:
        batch = first(dm, step=step)
        assert batch["answer_mask"].sum(1).eq(pairs).all(), step
        assert dm.curriculum.current(step) == {"recall_pairs": float(pairs)}
        keys, _, queries, text = parse_recall(batch["tokens"][0])
        assert len(keys) == pairs and text[-1:] == queries[-1][1]
    assert all(b["answer_mask"].sum(1).eq(4).all() for b in dm.val_batches())
    # the model's reach check reads the final count's (smallest) gap
    assert dm.model_args()["min_recall_gap"] == 129 - 6 * 4 + 4
    assert BlockRecurrentDataModule(source="recall").curriculum is None


def test_recall_sample_too_short_fails_clearly():
    BlockRecurrentDataModule(source="recall", sample_len=24 + 10, recall_pairs=4, recall_gap=10)
    with pytest.raises(ValueError, match=r"sample_len=33 .*at least 34 .*recall_pairs=4"):
        BlockRecurrentDataModule(source="recall", sample_len=33, recall_pairs=4, recall_gap=10)
    with pytest.raises(ValueError, match=r"sample_len=11 .*at least 12"):
        BlockRecurrentDataModule(source="recall", sample_len=11, recall_pairs=2)


# ------------------------------------------------------------------------- streams and checks


@pytest.mark.parametrize("source", ["recall", "stdlib"])
def test_streams_differ_by_rank_and_step_and_repeat_per_seed(source):
    dm = BlockRecurrentDataModule(source=source, sample_len=65, batch_size=4)
    base = first(dm, 0, 0, 0)["tokens"]
    assert torch.equal(first(dm, 0, 0, 0)["tokens"], base)
    assert torch.equal(next(iter(dm.train_dataloader()))["tokens"], base)  # rank 0, step 0
    for other in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        assert not torch.equal(first(dm, *other)["tokens"], base), other
    # the stream's batch maker goes to dataloader workers
    again = pickle.loads(pickle.dumps(dm.batch_maker()))
    assert torch.equal(again(gen(3), 0)["tokens"], dm.batch_maker()(gen(3), 0)["tokens"])


@pytest.mark.parametrize("source", ["recall", "stdlib"])
def test_validation_is_the_same_for_every_instance(source):
    a = BlockRecurrentDataModule(source=source, sample_len=65, val_batches=3, seed=1)
    b = BlockRecurrentDataModule(source=source, sample_len=65, val_batches=3, seed=2)
    va, vb = list(a.val_dataloader()), list(b.val_dataloader())
    assert len(va) == 3 and va[0].keys() == vb[0].keys()
    assert all(torch.equal(x[k], y[k]) for x, y in zip(va, vb, strict=True) for k in x)
    assert not torch.equal(va[0]["tokens"], va[1]["tokens"])
    assert len(list(a.test_dataloader())) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"source": "wiki"}, r"source='wiki'.*\['stdlib', 'enwik8', 'recall'\]"),
        ({"sample_len": 1}, r"sample_len=1 "),
        ({"batch_size": 0}, r"batch_size=0 "),
        ({"val_batches": 0}, r"val_batches=0 "),
        ({"val_batch_size": 0}, r"val_batch_size=0 "),
        ({"val_fraction": 0.0}, r"val_fraction=0.0 .*\(0.0, 1.0\)"),
        ({"val_fraction": 1}, r"val_fraction=1 "),
        ({"recall_values": 1}, r"recall_values=1 .*\[2, 10\]"),
        ({"recall_values": 11}, r"recall_values=11 .*\[2, 10\]"),
        ({"recall_pairs": 27}, r"recall_pairs=27 .*\[1, 26\]"),
        ({"recall_pairs": 5, "recall_keys": 4}, r"recall_pairs=5 .*\[1, 4\]"),
        ({"recall_keys": 155}, r"recall_keys=155 .*\[1, 154\]"),
        ({"recall_pairs_start": 2}, r"recall_pairs_start=2 .*only read by source='recall'"),
        ({"source": "recall", "recall_pairs_start": 0}, r"recall_pairs_start=0 "),
        (
            {"source": "recall", "recall_pairs_start": 5, "recall_pairs": 4},
            r"recall_pairs_start=5 .*final value 4",
        ),
        ({"recall_pairs_every": 0}, r"recall_pairs_every=0 "),
        ({"recall_gap": -1}, r"recall_gap=-1 "),
        ({"enwik8_split": (1, 2)}, r"enwik8_split=\(1, 2\) .*three positive integers"),
        ({"path": "enwik8.zip"}, r"path='enwik8.zip' .*only read by source='enwik8'"),
        ({"max_corpus_bytes": 0}, r"max_corpus_bytes=0 "),
        ({"num_workers": -1}, r"num_workers=-1 "),
    ],
)
def test_bad_arguments_fail_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockRecurrentDataModule(**kwargs)


def test_sample_longer_than_a_split_fails_clearly(tmp_path):
    path, _ = fake_enwik8(tmp_path, "raw")
    with pytest.raises(ValueError, match=r"sample_len=600 .*every enwik8 split"):
        BlockRecurrentDataModule(source="enwik8", path=path, enwik8_split=SPLIT, sample_len=600)
