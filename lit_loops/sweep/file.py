"""The sweep file: reading one and refusing a bad one before any run starts.

The file is the one ``wandb sweep FILE`` takes. Beyond wandb's own schema (asked of the
engine), the runner needs a method the engine proposes from, a metric to rank the runs by,
and a ``command`` with ``${args}``, where each run's parameters go. Every problem is a
``ValueError`` naming the file, which ``lit-loops sweep`` prints as a one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from lit_loops.sweep.engine import check_schema

METHODS = ("grid", "random", "bayes")  # what the engine proposes from (not "custom")


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates a sweep file; every problem is a ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"sweep file {str(path)!r} is not valid YAML: {err}") from None
    check_sweep(config, str(path))
    return config


def check_sweep(config: Any, where: str = "sweep") -> None:
    if not isinstance(config, dict):
        raise ValueError(f"{where}: a sweep file is a mapping (method, metric, parameters, ...)")
    method = config.get("method")
    if method not in METHODS:  # the schema's own message would not name the key
        raise ValueError(f"{where}: method={method!r} is invalid: must be one of {METHODS}")
    metric = config.get("metric")
    if not isinstance(metric, dict) or "name" not in metric:
        raise ValueError(f"{where}: `metric: {{name: ..., goal: maximize|minimize}}` is required")
    command = config.get("command")
    if not isinstance(command, list) or "${args}" not in command:
        raise ValueError(
            f"{where}: `command` must be a list containing ${{args}}, e.g. "
            "[${env}, lit-loops, fit, --config, configs/<exp>/<variant>.yaml, ${args}]"
        )
    check_schema(config, where)
