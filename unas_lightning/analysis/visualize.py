"""Draw a genotype: ``python -m unas_lightning.analysis.visualize GENOTYPE [--out DIR]``.

    python -m unas_lightning.analysis.visualize runs/quickstart/latest/genotype.json        # writes next to it
    python -m unas_lightning.analysis.visualize UNAS_CIFAR10 --out figures/

Each space draws its own genotypes (the optional ``Drawable`` interface of ``spaces/genotype.py``): a
DARTS cell as a matplotlib PNG like paper Fig. 3 plus Graphviz DOT (rendered to PDF when Graphviz's
``dot`` is installed), a ProxylessNAS network as its chain of MBConv blocks like Fig. 5. A space
without a drawing is reported as such (exit status 2), as is a missing or malformed genotype.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from unas_lightning.genotypes import load_genotype
from unas_lightning.spaces.genotype import Drawable


class NoDrawing(ValueError):
    """The genotype's space has no drawing."""


def draw(name_or_path: str, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draw a genotype (published name or JSON path); files go to ``out_dir`` (default: next to the JSON)."""
    genotype = load_genotype(name_or_path)
    if not isinstance(genotype, Drawable):
        raise NoDrawing(
            f"the {genotype.space_name!r} space has no drawing ({type(genotype).__name__} is not Drawable)."
        )
    source = Path(name_or_path)
    out = Path(out_dir) if out_dir is not None else (source.parent if source.suffix == ".json" else Path("."))
    return genotype.draw(out, source.stem)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw a genotype (a cell like Fig. 3, a network like Fig. 5).")
    parser.add_argument("genotype", help="a genotype JSON path or a published name such as UNAS_CIFAR10")
    parser.add_argument("--out", default=None, help="output folder (default: next to the JSON file)")
    args = parser.parse_args(argv)
    try:
        files = draw(args.genotype, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"visualize: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for path in files:
        print(path)


if __name__ == "__main__":
    main()
