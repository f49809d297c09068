"""What every evaluation plot of the suite ends with (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path


def finish_plot(fig, ax, path: str | Path, title: str) -> None:
    """Title, grid and legend on ``ax``; ``fig`` written to ``path`` (PNG, 120 dpi), closed."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
