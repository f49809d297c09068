"""The W&B sweep engine, asked as the wandb server asks it.

The engine is the ``sweeps`` package: the code the wandb server runs. It answers three
questions, each from the sweep file and the runs so far: is this a sweep config it takes
(wandb's JSON schema), what the next run's parameters are (grid, random, bayes), and which
running runs to stop early (``early_terminate``, hyperband). It sees runs as the server
holds them (``SweepRun``: state, config, summary, history); :func:`engine_run` translates a
:class:`~lit_loops.sweep.state.RunRecord`. Only this module touches ``sweeps``, and only
when first asked: it is slow to import and warns as it does.
"""

from __future__ import annotations

import warnings
from typing import Any

from lit_loops.sweep.state import DONE_STATES, RunRecord


def import_sweeps():
    """The ``sweeps`` package, imported quietly."""
    with warnings.catch_warnings():  # sweeps 0.3 still uses a pydantic-1 config key
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def check_schema(config: dict[str, Any], where: str) -> None:
    """wandb's JSON schema for sweep configs; a violation is a ``ValueError`` naming ``where``."""
    import jsonschema

    try:
        import_sweeps().SweepConfig(config)
    except jsonschema.ValidationError as err:
        raise ValueError(f"{where}: invalid sweep config: {err.message}") from None


def engine_run(run: RunRecord, metric_name: str):
    """This run as the sweep engine sees it (a run with no metric counts as failed)."""
    sweeps = import_sweeps()
    if run.state in DONE_STATES:
        state = sweeps.RunState.finished if run.metric is not None else sweeps.RunState.failed
    elif run.state == "crashed":
        state = sweeps.RunState.crashed
    else:
        state = sweeps.RunState.running
    summary = {metric_name: run.metric} if run.metric is not None else {}
    return sweeps.SweepRun(
        name=run.id,
        state=state,
        config={k: {"value": v} for k, v in run.params.items()},
        summary_metrics=summary,
        history=[h for h in run.history if h.get(metric_name) is not None],
    )


def next_params(
    config: dict[str, Any], runs: list[RunRecord], metric_name: str
) -> dict[str, Any] | None:
    """The parameters of the run the engine proposes next; None once a grid is all taken."""
    suggestion = import_sweeps().next_run(config, [engine_run(r, metric_name) for r in runs])
    if suggestion is None:
        return None
    return {k: v["value"] for k, v in suggestion.config.items()}


def runs_to_stop(config: dict[str, Any], runs: list[RunRecord], metric_name: str) -> list[str]:
    """The ids of the runs the sweep's ``early_terminate`` stops now (none without one)."""
    if "early_terminate" not in config:
        return []
    to_stop = import_sweeps().stop_runs(config, [engine_run(r, metric_name) for r in runs])
    return [suggestion.name for suggestion in to_stop]
