"""ArchitectureMonitor: what the search is doing, per selector, and what it found."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from unas_lightning.spaces.base import SearchSpace
from unas_lightning.spaces.genotype import Genotype
from unas_lightning.utils.files import run_dir, write_json_atomic
from unas_lightning.utils.network_size import count_parameters, multiply_adds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from unas_lightning.costs import CostTerm
    from unas_lightning.search.module import SearchModule

SUMMARY_FILE = "summary.json"


class ArchitectureMonitor(L.Callback):
    """Logs p_phi per selector every epoch and writes a summary of the derived architecture at the end.

    After every training epoch (the heatmap on rank 0):

    * ``arch/entropy/<key>``: the entropy (nats) of each group of logits, averaged over its rows, and
      ``arch/max_prob/<key>``: the probability of its most probable category;
    * ``arch/p_phi``: a heatmap of p_phi, one row per selector and one column per category (labelled with
      the operation or input names), as a TensorBoard image, or ``arch/p_phi_epoch{e}.png`` in the run
      directory when there is no TensorBoard logger.

    Under DDP the arch values are logged on every rank (``sync_dist``: a reduction Lightning defers to
    its own epoch-end step) and the rest runs on rank 0 with no collective; the run folder is resolved
    once in ``setup``.

    At the end of training (the model still on its device) it prints and saves ``summary.json`` next to
    ``genotype.json``: the genotype; under ``search_network`` the parameters and multiply-adds for one
    example of ``space.derived_network`` (the network the cost terms measure: for the DARTS space the
    evaluation network at the *search's* width and depth, without the auxiliary head); under
    ``retrain_network`` the same figures for the network ``retrain_config`` builds from this genotype
    (the size that retraining trains and papers report), with the command that retrains it; and the
    measured value of every cost term of the search.

    Args:
        heatmaps: draw the p_phi heatmaps (matplotlib).
        retrain_config: a retrain config (``configs/retrain/*.yaml``, relative to the working folder)
            whose ``RetrainModule`` arguments size the ``retrain_network``; None leaves it out.
    """

    def __init__(self, heatmaps: bool = True, retrain_config: str | None = None):
        super().__init__()
        self.heatmaps = heatmaps
        self.retrain_config = retrain_config
        self.summary: dict[str, Any] = {}
        self.folder: Path | None = None
        self._figure: Figure | None = None  # rank 0's heatmap, drawn again every epoch

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Resolve the run folder once, on every rank (a collective under DDP: never in the later hooks)."""
        self.folder = run_dir(trainer)

    # -- every epoch ------------------------------------------------------------------------------
    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        space = cast("SearchModule", pl_module).space
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        folder = cast(Path, self.folder)  # set in setup
        probs = {k: torch.softmax(v.detach().float(), -1) for k, v in space.arch.items()}
        for key, p in probs.items():  # logged on every rank (phi is the same on all): sync_dist's mean changes nothing
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
            pl_module.log(f"arch/entropy/{key}", entropy, batch_size=1, sync_dist=True)
            pl_module.log(f"arch/max_prob/{key}", p.max(-1).values.mean(), batch_size=1, sync_dist=True)
        if not trainer.is_global_zero or not self.heatmaps:
            return
        probs = {k: p.cpu() for k, p in probs.items()}
        fig = self._draw(space, probs, title=f"p_phi after epoch {trainer.current_epoch}")
        if logger is not None:
            logger.experiment.add_figure("arch/p_phi", fig, global_step=trainer.global_step, close=False)
        else:
            out = folder / "arch" / f"p_phi_epoch{trainer.current_epoch}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=100)
        fig.set_layout_engine("none")  # laid out by its first drawing: the labels never change

    def _draw(self, space: SearchSpace, probs: dict[str, torch.Tensor], title: str) -> Figure:
        """This run's heatmap with ``probs``: built at the first epoch (its layout, computed when it is first
        drawn, is a third of a drawing's time), then only its colours and title are replaced."""
        if self._figure is None:
            self._figure = self.heatmap(space, probs, title=title)
            return self._figure
        families, _ = _families(space, probs)
        width = max(len(row) for _, rows in families for _, row, _ in rows)
        axes = [ax for ax in self._figure.axes if ax.images]  # the panels, not the colour bar
        for ax, (_, rows) in zip(axes, families, strict=True):
            ax.images[0].set_data(_grid(rows, width).numpy())
        axes[0].set_title(title)
        return self._figure

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._figure is not None:
            _close(self._figure)
            self._figure = None

    @staticmethod
    def heatmap(space: SearchSpace, probs: dict[str, torch.Tensor], title: str = "p_phi") -> Figure:
        """A matplotlib figure: one row per selector (row of a logits tensor), one column per category.

        Rows whose category names continue one another (the DARTS space's operation rows; its input rows,
        whose candidates grow by one node per node) share a panel whose columns carry the names; a space
        with more than four such families gets one panel with the names written in the cells instead."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        families, in_cells = _families(space, probs)
        width = max(len(row) for _, rows in families for _, row, _ in rows)
        heights = [len(rows) for _, rows in families]
        fig, axes = plt.subplots(
            len(families),
            1,
            figsize=(2 + 0.6 * width, 1.2 + 0.22 * sum(heights) + 0.6 * len(families)),
            gridspec_kw={"height_ratios": heights},
            squeeze=False,
            layout="constrained",
        )
        for ax, (columns, rows) in zip(axes[:, 0], families, strict=True):
            image = ax.imshow(_grid(rows, width).numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=6)
            if in_cells:
                ax.set_xticks(range(width), [str(i) for i in range(width)], fontsize=7)
                for i, (_, _, row_names) in enumerate(rows):
                    for j, name in enumerate(row_names):
                        ax.text(j, i, name, ha="center", va="center", fontsize=4, color="white")
            else:
                ax.set_xticks(range(len(columns)), columns, fontsize=6, rotation=30, ha="right")
        axes[0, 0].set_title(title)
        fig.colorbar(image, ax=list(axes[:, 0]), fraction=0.03)
        return fig

    # -- end of training -------------------------------------------------------------------------------
    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        module = cast("SearchModule", pl_module)
        space = module.space
        mode = space.mode()
        terms = cast("Sequence[CostTerm]", module.costs)
        costs = {c.name: {"value": c.measured_here(mode), "unit": c.meter.unit} for c in terms}
        folder = cast(Path, self.folder)  # set in setup
        genotype = module.genotype()
        if genotype is None:  # phi never moved: there is no derived architecture to report
            self.summary = {"genotype": None, "note": "no phi-step ran", "epochs": trainer.current_epoch}
            write_json_atomic(folder / SUMMARY_FILE, self.summary)
            return
        # Lightning's data connector sets ``Trainer.datamodule``; the class does not declare it
        shape = getattr(trainer.datamodule, "example_shape", None)  # type: ignore[attr-defined]
        search_net = _size(space.derived_network(genotype), shape)
        search_net["scale"] = "the search's width and depth (the network the cost terms measure)"
        retrain_net = None
        if self.retrain_config is not None:
            retrain_net = retrain_network(genotype, self.retrain_config, shape)
            retrain_net["command"] = (
                f"unas-cli fit --config {self.retrain_config} --model.init_args.genotype {folder / 'genotype.json'}"
            )
        self.summary = {
            "genotype": genotype.to_dict(),
            "search_network": search_net,
            "retrain_network": retrain_net,
            "input_shape": list(shape) if shape is not None else None,
            "costs": costs,
            "device": str(module.device),
            "epochs": trainer.current_epoch,
            "entropy": float(space.distribution().entropy().detach()),
        }
        write_json_atomic(folder / SUMMARY_FILE, self.summary)
        lines = [
            f"derived architecture ({folder / SUMMARY_FILE}):",
            f"  genotype:        {genotype.to_json()}",
            f"  search network:  {_describe(search_net)} at the search's width and depth",
        ]
        if retrain_net is not None:
            where = f"as {self.retrain_config} builds it"
            lines.append(f"  retrain network: {_describe(retrain_net)} {where}")
            lines.append(f"  retrain it:      {retrain_net['command']}")
        lines += [f"  {name + ':':<16} {c['value']:.4g} {c['unit']}" for name, c in costs.items()]
        rank_zero_info("\n".join(lines))


def _size(network: nn.Module, shape: Sequence[int] | None) -> dict[str, Any]:
    params = count_parameters(network)
    madds = multiply_adds(network, shape) if shape is not None else None
    return {"network": type(network).__name__, "parameters": params, "multiply_adds": madds}


def _describe(net: dict[str, Any]) -> str:
    if "error" in net:
        return f"not measured ({net['error']})"
    text = f"{net['network']}, {net['parameters'] / 1e6:.3f}M parameters"
    return text + (f", {net['multiply_adds'] / 1e6:.1f}M multiply-adds per example" if net["multiply_adds"] else "")


def retrain_network(genotype: Genotype, config: str, shape: Sequence[int] | None) -> dict[str, Any]:
    """Parameters and multiply-adds of the network the retrain ``config`` builds for ``genotype``.

    The config's ``RetrainModule`` arguments are used as written (the genotype replaced, the optimizer
    and schedule left out); a config that cannot be read or built is reported, not raised.
    """
    from unas_lightning.retrain import RetrainModule

    try:
        data = yaml.safe_load(Path(config).read_text()) or {}
        args = dict((data.get("model") or {}).get("init_args") or {})
        for key in ("genotype", "optimizer", "scheduler"):
            args.pop(key, None)
        module = RetrainModule(genotype=genotype.to_dict(), **args)
        size = _size(module.net, shape or (module.in_channels, 32, 32))  # parameters without the auxiliary head
    except (OSError, yaml.YAMLError, TypeError, ValueError, KeyError, AttributeError) as err:
        return {"config": config, "error": f"{type(err).__name__}: {err}"}
    return {"config": config, **size}


#: a heatmap panel: (column names, rows); a row is (its label, its probabilities, its category names)
_Family = tuple[list[str], list[tuple[str, torch.Tensor, list[str]]]]


def _families(space: SearchSpace, probs: dict[str, torch.Tensor]) -> tuple[list[_Family], bool]:
    """The heatmap's panels (rows whose category names continue one another share one) and whether the names
    go into the cells instead (more than four panels: all rows in one)."""
    families: list[_Family] = []
    for key, p in probs.items():
        p2 = p.reshape(-1, p.shape[-1])
        names = list(space.category_names(key))
        rows = [(key if p2.shape[0] == 1 else f"{key}[{r}]", row, names) for r, row in enumerate(p2)]
        for columns, members in families:
            shorter, longer = sorted((names, columns), key=len)
            if longer[: len(shorter)] == shorter:  # one list continues the other: the same family
                columns[:] = longer
                members.extend(rows)
                break
        else:
            families.append((list(names), rows))
    if len(families) > 4:  # one panel, every row's own names in its cells
        return [([], [row for _, members in families for row in members])], True
    return families, False


def _grid(rows: list[tuple[str, torch.Tensor, list[str]]], width: int) -> torch.Tensor:
    """A panel's probabilities, one row per selector, NaN (blank) past a row's own categories."""
    grid = torch.full((len(rows), width), float("nan"))
    for i, (_, row, _) in enumerate(rows):
        grid[i, : len(row)] = row
    return grid


def _close(fig: Figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
