"""``torch.compile`` for every experiment's network, one switch: ``compile: true`` in a
module's ``init_args`` (``--model.init_args.compile=true``), handled by ``ExperimentModule``.

What is compiled is the network's repeated unit, not the LightningModule's Python and not
an unrolled loop: every transformer ``Block`` (``lit_loops.nn``: the per-layer body of
every ``LayerStack``, plain or looped) and every ``BlockRecurrentLayer`` (the per-layer
body of the Block-Recurrent Transformer's block loop); a network with neither is compiled
whole. So a loop count that changes every step (the looped models' curricula and extra
loops, the number of blocks in a segment) never recompiles: the Python loop calls the same
compiled unit ``loops x n_layers`` times. The units are compiled in place
(``nn.Module.compile``): parameters, buffers and ``state_dict`` keys are unchanged, so
checkpoints load with compile on or off.

Shapes: ``dynamic=None`` (torch's automatic dynamic shapes): a unit is compiled for the
sizes it first sees, and a size that later changes (ICL's prompt-length curriculum, the
first block of a segment that has no XL memory yet, decoding) recompiles once with that
size symbolic. Every recompile is logged with its reason (torch's ``recompiles`` log,
unless ``TORCH_LOGS`` says otherwise) and bounded by ``RECOMPILE_LIMIT`` per unit kind;
past it torch runs that unit eagerly (and says so).

Inductor compiles for the device the unit runs on (C++/OpenMP on CPU, Triton on GPU); the
first training step pays the compile time (10-40 s for these networks on a CPU; inductor's
on-disk cache makes later runs faster). Compiled and eager steps agree to float32
rounding, and exact resume holds compiled (``tests/test_compile.py``). On a CPU it buys
little here (the steps are matrix products and attention, which stay the same kernels) and
slows ReLU networks (inductor's bool mask stores under gcc): BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import os

from torch import nn

from lit_loops.nn import Block

RECOMPILE_LIMIT = 32  # per code object (torch's default is 8): grad/no-grad x train/eval x sizes
OPTIONS = {"dynamic": None}


def unit_types() -> tuple[type[nn.Module], ...]:
    """The modules compiled one by one (see the module docs)."""
    # imported here: the core package does not import the experiments at import time
    from lit_loops.experiments.block_recurrent.model import BlockRecurrentLayer

    return (Block, BlockRecurrentLayer)


def compile_units(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of what ``compile_network`` compiles in ``net``: its ``Block``s
    and ``BlockRecurrentLayer``s, or ``net`` itself when it has none."""
    kinds = unit_types()
    units = [(name, m) for name, m in net.named_modules() if isinstance(m, kinds)]
    return units or [("", net)]


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def compile_network(net: nn.Module, **options) -> list[str]:
    """Compiles ``net``'s units in place (``nn.Module.compile``; ``options`` go to
    ``torch.compile`` over ``OPTIONS``); a unit compiled before is left as it is. Returns
    the compiled units' names (``""``: the whole network)."""
    configure_dynamo()
    options = {**OPTIONS, **options}
    names = []
    for name, unit in compile_units(net):
        if not is_compiled(unit):
            unit.compile(**options)
        names.append(name)
    return names


def configure_dynamo() -> None:
    """Raise torch's recompile limit to ``RECOMPILE_LIMIT`` (never lower it) and log
    recompiles, unless ``TORCH_LOGS`` chooses the logs."""
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    if not os.environ.get("TORCH_LOGS"):
        torch._logging.set_logs(recompiles=True)


def compile_counts() -> dict[str, int]:
    """Graphs torch has compiled in this process and how many calls it captured
    (``torch._dynamo``'s counters): ``{"unique_graphs": ..., "calls_captured": ...}``."""
    from torch._dynamo.utils import counters

    stats = counters["stats"]
    return {key: int(stats[key]) for key in ("unique_graphs", "calls_captured")}
