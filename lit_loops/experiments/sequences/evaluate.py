"""Scoring a sequence model as a user reads it: the next term of real sequences after every
prefix, next to what the training distribution itself would answer.

* ``score_sequences(module, sequences)``: one row per (sequence, prefix of ``PREFIXES``
  terms that has a next term): the model's greedy next term against the true one;
* ``posterior_next(datamodule, prefix)``: the most likely next term under the run's training
  distribution (the families' training banks, mixed as at the end of the curriculum): where
  it is wrong, no model that learned the training distribution gets it right (a sampling
  problem); where it is right and the model is wrong, the model missed the rule;
* ``RealSequencesEval``: a callback that logs, after every validation, ``val/real_acc``
  (in-family, ``real.IN_FAMILY``), ``val/real_acc_pos<k>``, ``val/real_distance`` and
  ``val/real_out_acc`` (``real.OUT_OF_FAMILY``, no family generates them: an upper bound of
  what the families teach), ``val/real_out_acc_pos<k>``;
* ``ceiling_position_accuracy(mixture, families, batches)``: the accuracy per prefix length
  of that posterior predictor on a validation set, the ceiling of any model trained on the
  distribution (where families share a prefix, e.g. ``mixed_periods`` and ``three_step``
  after ``78 78 79 79 79 80 80``, it is below 1);
* ``evaluate(ckpt, out_dir)``: what ``scripts/sequences_eval.py`` writes: the per-sequence
  table, the accuracy per prefix length of the validation, held-out and real sets, the
  ceiling beside them, and a plot of it.

The interface the callback needs: a LightningModule whose ``forward`` maps ``(B, T)`` long
tokens in 0..255 to ``(B, T, 256)`` causal next-term logits, with ``hparams.max_len``
positions (``SequenceModule``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_loops.checks import check, check_positive_int
from lit_loops.experiments.sequences.banks import family_bank
from lit_loops.experiments.sequences.families import FAMILIES
from lit_loops.experiments.sequences.metrics import PrefixScores, fixed_after
from lit_loops.experiments.sequences.real import IN_FAMILY, OUT_OF_FAMILY, PREFIXES, RealSequence
from lit_loops.plots import finish_plot

SETS = {"real": IN_FAMILY, "real_out": OUT_OF_FAMILY}


@torch.no_grad()
def score_sequences(
    module: torch.nn.Module,
    sequences: Sequence[RealSequence],
    prefixes: Sequence[int] = PREFIXES,
    max_len: int | None = None,
) -> list[dict]:
    """One dict per (sequence, prefix length ``k`` in ``prefixes``, ``k <= max_len`` and
    ``k < len(terms)``): ``anumber``, ``name``, ``family``, ``k``, ``prefix``, ``truth``,
    ``pred``, ``correct``, ``distance``. One causal forward pass over the longest prefix."""
    max_len = max_len or int(module.hparams.max_len)
    n = min(max(prefixes), max_len)
    tokens = torch.zeros(len(sequences), n, dtype=torch.long)
    for i, s in enumerate(sequences):
        head = s.terms[:n]
        tokens[i, : len(head)] = torch.tensor(head)
    device = next(module.parameters()).device
    pred = module(tokens.to(device)).argmax(-1).cpu()  # (N, n): after 1..n terms
    rows = []
    for i, s in enumerate(sequences):
        for k in prefixes:
            if k <= n and k < len(s.terms):
                p, truth = int(pred[i, k - 1]), s.terms[k]
                rows.append({
                    "anumber": s.anumber, "name": s.name, "family": s.family or "-", "k": k,
                    "prefix": list(s.terms[:k]), "truth": truth, "pred": p,
                    "correct": p == truth, "distance": abs(p - truth),
                })  # fmt: skip
    return rows


def summarize(rows: list[dict], prefix: str) -> dict[str, float]:
    """``<prefix>acc`` and ``<prefix>distance`` over every row, ``<prefix>acc_pos<k>`` per
    prefix length (nan without rows)."""

    def mean(values) -> float:
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    out = {
        f"{prefix}acc": mean(r["correct"] for r in rows),
        f"{prefix}distance": mean(r["distance"] for r in rows),
    }
    for k in sorted({r["k"] for r in rows}):
        out[f"{prefix}acc_pos{k}"] = mean(r["correct"] for r in rows if r["k"] == k)
    return out


def real_metrics(module: torch.nn.Module, prefixes: Sequence[int] = PREFIXES) -> dict[str, float]:
    """``real_acc``, ``real_acc_pos<k>``, ``real_distance``, ``real_out_...`` of ``module``."""
    out = {}
    for name, sequences in SETS.items():
        out |= summarize(score_sequences(module, sequences, prefixes), f"{name}_")
    return out


class RealSequencesEval(Callback):
    """Logs ``val/real_acc``, ``val/real_acc_pos<k>``, ``val/real_distance`` and the same
    for the out-of-family sequences (``val/real_out_acc`` ...) after every validation (see
    the module docs); with ``per_sequence``, also ``val_real/acc_<A-number>`` (its mean
    over its prefixes).

    Args:
        prefixes: the prefix lengths scored (5..8 terms).
        per_sequence: log every sequence's accuracy too.
    """

    def __init__(self, prefixes: list[int] | None = None, per_sequence: bool = False) -> None:
        prefixes = list(PREFIXES) if prefixes is None else list(prefixes)
        check(
            len(prefixes) > 0 and all(isinstance(k, int) and k >= 1 for k in prefixes),
            "prefixes",
            prefixes,
            "must be prefix lengths >= 1",
        )
        self.prefixes, self.per_sequence = prefixes, per_sequence

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        check(
            "max_len" in getattr(pl_module, "hparams", {}),
            "RealSequencesEval",
            type(pl_module).__name__,
            "needs a module whose forward maps (B, T) tokens in 0..255 to (B, T, 256) "
            "next-term logits, with hparams.max_len (a SequenceModule)",
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        was_training = pl_module.training
        pl_module.eval()
        logs = {}
        for name, sequences in SETS.items():
            rows = score_sequences(pl_module, sequences, self.prefixes)
            logs |= summarize(rows, f"val/{name}_")
            if self.per_sequence:
                for s in sequences:
                    mine = [r["correct"] for r in rows if r["anumber"] == s.anumber]
                    if mine:
                        logs[f"val_real/acc_{s.anumber}"] = sum(mine) / len(mine)
        pl_module.train(was_training)
        for key, value in logs.items():
            pl_module.log(key, float(value), on_epoch=True, add_dataloader_idx=False)


# --- what the training distribution answers ---------------------------------------------------


def training_mixture(datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's training distribution at the end of its curriculum: every sequence of its
    families' training banks ``(N, L)`` long and its probability ``(N,)`` float64."""
    hp = datamodule.hparams
    mix = datamodule.schedule.mix(10**9)  # (phases,) at the end, with the replay
    seqs, probs = [], []
    for name in datamodule.names:
        fam = FAMILIES[name]
        bank, cdf = family_bank(name, datamodule.length, hp.small_share, datamodule.train_split)
        prob = torch.diff(cdf, prepend=cdf.new_zeros(1))
        in_phase = [n for n in datamodule.names if FAMILIES[n].phase == fam.phase]
        share = float(mix[datamodule.present.index(fam.phase)]) / len(in_phase)
        seqs.append(bank.long())
        probs.append(prob * share)
    return torch.cat(seqs), torch.cat(probs)


def posterior_next(
    mixture: tuple[torch.Tensor, torch.Tensor], prefix: Sequence[int]
) -> tuple[int | None, float]:
    """The most likely next term after ``prefix`` under ``mixture`` (``training_mixture``)
    and its probability; ``(None, 0.0)`` when no training sequence starts so."""
    seqs, prob = mixture
    k = len(prefix)
    if k >= seqs.shape[1]:
        return None, 0.0
    match = (seqs[:, :k] == torch.tensor(list(prefix))).all(1)
    if not bool(match.any()):
        return None, 0.0
    mass = torch.zeros(256, dtype=torch.float64).index_add_(0, seqs[match, k], prob[match])
    return int(mass.argmax()), float(mass.max() / mass.sum())


def posterior_table(mixture: tuple[torch.Tensor, torch.Tensor]) -> dict[tuple[int, ...], int]:
    """``posterior_next`` for every prefix of every training sequence at once: ``{prefix
    (tuple, 1 .. L-1 terms): the most likely next term}``."""
    seqs, prob = mixture
    mass: dict[tuple[int, ...], dict[int, float]] = {}
    rows, weights = seqs.tolist(), prob.tolist()
    for k in range(1, seqs.shape[1]):
        for row, w in zip(rows, weights, strict=True):
            nexts = mass.setdefault(tuple(row[:k]), {})
            nexts[row[k]] = nexts.get(row[k], 0.0) + w
    return {prefix: max(nexts, key=nexts.get) for prefix, nexts in mass.items()}


def posterior_logits(table: dict[tuple[int, ...], int], seq: torch.Tensor) -> torch.Tensor:
    """``seq (B, T + 1)`` -> ``(B, T, 256)`` one-hot logits of the posterior predictor at
    every prefix; a prefix no training sequence starts with gets an answer that is wrong
    (the truth + 1): the predictor has none."""
    B, T = seq.shape[0], seq.shape[1] - 1
    answer = torch.empty(B, T, dtype=torch.long)
    rows = seq.tolist()
    for i, row in enumerate(rows):
        for t in range(T):
            guess = table.get(tuple(row[: t + 1]))
            answer[i, t] = (row[t + 1] + 1) % 256 if guess is None else guess
    return torch.nn.functional.one_hot(answer, 256).float()


def ceiling_position_accuracy(
    table: dict[tuple[int, ...], int], families: Sequence[str], batches: list[dict]
) -> dict[str, list[float]]:
    """``position_accuracy`` of the posterior predictor (``posterior_table``): the best any
    model trained on the mixture can score per prefix length, scored as the model is."""
    return _position_accuracy(
        lambda seq: posterior_logits(table, seq.cpu()), families, len(batches[0]["seq"][0]) - 1,
        batches,
    )  # fmt: skip


# --- the evaluation of a checkpoint -----------------------------------------------------------


@torch.no_grad()
def position_accuracy(module, batches: list[dict]) -> dict[str, list[float]]:
    """Accuracy per prefix length 1..T of ``batches`` (a validation set): ``all``, the mean
    over the families scored at each length (``metrics.PrefixScores``), ``phase<p>`` over a
    phase's, and per family (nan before its ``fixed_after``)."""
    device = next(module.parameters()).device
    return _position_accuracy(
        lambda seq: module(seq[:, :-1].to(device)).cpu(),
        module.families,
        int(module.hparams.max_len),
        batches,
    )


def _position_accuracy(
    predict: Callable[[torch.Tensor], torch.Tensor],
    families: Sequence[str],
    positions: int,
    batches: list[dict],
) -> dict[str, list[float]]:
    """``predict(seq (B, T + 1)) -> logits (B, T, 256)`` scored per prefix length."""
    scores = PrefixScores(fixed_after(families), positions)
    for batch in batches:
        scores.update(predict(batch["seq"]), batch["seq"], batch["valid"], batch["family"])
    per_family = scores.compute()["acc_pos"].float()  # (F, T)
    out = {"all": per_family.nanmean(0).tolist()}
    phases = torch.tensor([FAMILIES[n].phase for n in families])
    for p in sorted(set(phases.tolist())):
        out[f"phase{p}"] = per_family[phases == p].nanmean(0).tolist()
    for name, row in zip(families, per_family, strict=True):
        out[name] = row.tolist()
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(curves: dict[str, dict[int, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in curves.items():
        ks = sorted(k for k, v in points.items() if v == v)
        ax.plot(ks, [points[k] for k in ks], "-o", markersize=3, label=name)
    ax.set_xlabel("prefix length (terms seen)")
    ax.set_ylabel("next-term accuracy")
    ax.set_ylim(-0.02, 1.02)
    finish_plot(fig, ax, path, title)


def evaluate(
    ckpt: str | Path,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    val_per_family: int | None = None,
) -> dict[str, dict]:
    """Scores the checkpoint of a sequences run (``load_run``) and writes to ``out_dir``:

    * ``real.csv``: one row per (real sequence, prefix), in and out of family, with the
      model's answer and the training distribution's (``posterior``);
    * ``real.md``: a markdown table per sequence (answers after 5..8 terms);
    * ``positions.csv`` / ``positions.png``: accuracy per prefix length on the validation
      set, the held-out set (with ``heldout_params``), and the real sequences, beside the
      ceiling of the training distribution on the validation set (the CSV also per phase
      and per family of the validation set, the held-out set and the ceiling, empty before
      ``fixed_after``).

    ``val_per_family``: score that many fresh sequences per family (the validation and
    held-out sets drawn from the run's seeds) instead of the run's own number.

    Returns ``{"summary": {...}, "curves": {set: {k: accuracy}}}``."""
    from lit_loops.checkpoints import load_run
    from lit_loops.experiments.sequences.module import SequenceModule

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module, datamodule = load_run(ckpt, model_class=SequenceModule)
    module.eval()
    if datamodule is None:
        raise ValueError(f"ckpt={str(ckpt)!r} is invalid: it holds no DataModule arguments")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    if "small_share" not in saved:  # a run from before issue 18 drew the tables uniformly
        datamodule.hparams.small_share = 0.0
    if val_per_family is not None:  # more fresh sequences than the run validated on
        check_positive_int("val_per_family", val_per_family)
        datamodule.hparams.val_per_family = val_per_family
    mixture = training_mixture(datamodule)
    rows, summary_ = [], {}
    for name, sequences in SETS.items():
        scored = score_sequences(module, sequences)
        for r in scored:
            r["set"] = name
            r["posterior"], r["posterior_p"] = posterior_next(mixture, r["prefix"])
            r["posterior_p"] = round(r["posterior_p"], 3)
            r["prefix"] = " ".join(map(str, r["prefix"]))
        summary_ |= summarize(scored, f"{name}_")
        summary_[f"{name}_posterior_acc"] = summarize(
            [{**r, "correct": r["posterior"] == r["truth"]} for r in scored], ""
        )["acc"]
        rows += scored
    write_csv(out / "real.csv", rows)
    (out / "real.md").write_text(real_table(rows))
    curves: dict[str, dict[int, float]] = {}
    val = position_accuracy(module, datamodule.val_batches())
    curves["validation"] = dict(enumerate(val["all"], start=1))
    ceiling = ceiling_position_accuracy(
        posterior_table(mixture), module.families, datamodule.val_batches()
    )
    curves["validation, ceiling (training distribution)"] = dict(enumerate(ceiling["all"], 1))
    held_batches = datamodule.heldout_batches()
    held = position_accuracy(module, held_batches) if held_batches else {}
    if held:
        curves["held-out parameters"] = dict(enumerate(held["all"], 1))
    for name, label in (("real", "real, in family"), ("real_out", "real, out of family")):
        curves[label] = {
            int(key.rsplit("pos", 1)[1]): v for key, v in summary_.items()
            if key.startswith(f"{name}_acc_pos")
        }  # fmt: skip
    header = ["set", *[f"pos{k}" for k in range(1, len(curves["validation"]) + 1)]]
    table = dict(curves)  # then the validation and held-out sets per phase and per family
    table |= {f"validation {key}": dict(enumerate(v, 1)) for key, v in val.items() if key != "all"}
    table |= {f"held-out {key}": dict(enumerate(v, 1)) for key, v in held.items() if key != "all"}
    table |= {f"ceiling {key}": dict(enumerate(v, 1)) for key, v in ceiling.items() if key != "all"}
    with (out / "positions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for name, points in table.items():
            values = [points.get(k) for k in range(1, len(header))]
            writer.writerow([name, *["" if v is None or v != v else f"{v:.4f}" for v in values]])
    plot(curves, out / "positions.png", f"next-term accuracy: {Path(ckpt).name}")
    for key, value in summary_.items():
        log(f"{key}: {value:.4f}")
    log(f"tables and plot in {out}")
    return {"summary": summary_, "curves": curves}


def real_table(rows: list[dict]) -> str:
    """A markdown table: one line per real sequence, its answers after each prefix (a tick
    when right, else ``answer (truth)``), and the training distribution's wrong answers."""
    ks = sorted({r["k"] for r in rows})
    lines = [
        "| set | sequence | family | " + " | ".join(f"after {k}" for k in ks)
        + " | training distribution wrong at |",
        "| --- | --- | --- | " + " | ".join("---" for _ in ks) + " | --- |",
    ]  # fmt: skip
    seen: dict[tuple, list[dict]] = {}
    for r in rows:
        seen.setdefault((r["set"], r["anumber"], r["name"], r["family"]), []).append(r)
    for (set_, anumber, name, family), mine in seen.items():
        by_k = {r["k"]: r for r in mine}
        cells = [
            "" if k not in by_k else
            ("ok" if by_k[k]["correct"] else f"{by_k[k]['pred']} ({by_k[k]['truth']})")
            for k in ks
        ]  # fmt: skip
        wrong = [str(r["k"]) for r in mine if r["posterior"] != r["truth"]]
        lines.append(
            f"| {set_} | {anumber} {name} | {family} | " + " | ".join(cells)
            + f" | {', '.join(wrong) or '-'} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"
