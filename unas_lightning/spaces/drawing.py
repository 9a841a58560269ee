"""Small matplotlib helpers shared by the spaces' drawings (imported only when something is drawn)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch


def box(ax: Axes, xy: tuple[float, float], text: str, colour: str) -> None:
    """A rounded, labelled box centred at ``xy``."""
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - 0.45, y - 0.22), 0.9, 0.44, boxstyle="round,pad=0.05", fc=colour, ec="black"))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as an image (the folder is created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
