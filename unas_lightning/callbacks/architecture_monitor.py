"""ArchitectureMonitor: what the search is doing, per selector, and what it found."""

from __future__ import annotations

import json

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.flop_counter import FlopCounterMode

from unas_lightning.spaces.darts_genotype import DartsGenotype, write_text_atomic

SUMMARY_FILE = "summary.json"


class ArchitectureMonitor(L.Callback):
    """Logs p_phi per selector every epoch and writes a summary of the derived architecture at the end.

    After every training epoch (rank 0 only):

    * ``arch/entropy/<key>``: the entropy (nats) of each group of logits, averaged over its rows, and
      ``arch/max_prob/<key>``: the probability of its most probable category;
    * ``arch/p_phi``: a heatmap of p_phi, one row per selector and one column per category (labelled with
      the operation or input names), as a TensorBoard image, or ``arch/p_phi_epoch{e}.png`` in the run
      directory when there is no TensorBoard logger.

    At the end of fit it prints and saves ``summary.json`` next to ``genotype.json``: the genotype, the
    derived network's parameters and multiply-adds for one example (``torch.utils.flop_counter``;
    for the DARTS space the evaluation network at the search's width and depth, without the
    auxiliary head), and, when a ``LatencyCallback`` ran, the measured latency of the architecture.

    Args:
        heatmaps: draw the p_phi heatmaps (matplotlib).
    """

    def __init__(self, heatmaps: bool = True):
        super().__init__()
        self.heatmaps = heatmaps
        self.summary: dict = {}

    # -- every epoch ------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        space = pl_module.space
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        run_dir = pl_module.run_dir if self.heatmaps and logger is None else None  # collective under DDP
        if not trainer.is_global_zero:
            return
        probs = {k: torch.softmax(v.detach().float(), -1).cpu() for k, v in space.arch.items()}
        for key, p in probs.items():
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
            pl_module.log(f"arch/entropy/{key}", entropy, batch_size=1, rank_zero_only=True)
            pl_module.log(f"arch/max_prob/{key}", p.max(-1).values.mean(), batch_size=1, rank_zero_only=True)
        if not self.heatmaps:
            return
        fig = self.heatmap(space, probs, title=f"p_phi after epoch {trainer.current_epoch}")
        if logger is not None:
            logger.experiment.add_figure("arch/p_phi", fig, global_step=trainer.global_step, close=True)
            return
        out = run_dir / "arch" / f"p_phi_epoch{trainer.current_epoch}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        _close(fig)

    @staticmethod
    def heatmap(space, probs: dict[str, torch.Tensor], title: str = "p_phi"):
        """A matplotlib figure: one row per selector (row of a logits tensor), one column per category."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows, labels, names = [], [], []
        for key, p in probs.items():
            p2 = p.reshape(-1, p.shape[-1])
            for r, row in enumerate(p2):
                rows.append(row)
                labels.append(key if p2.shape[0] == 1 else f"{key}[{r}]")
                names.append(space.category_names(key))
        width = max(len(r) for r in rows)
        grid = torch.full((len(rows), width), float("nan"))
        for i, row in enumerate(rows):
            grid[i, : len(row)] = row
        fig, ax = plt.subplots(figsize=(2 + 0.6 * width, 1 + 0.22 * len(rows)))
        image = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_yticks(range(len(rows)), labels, fontsize=6)
        ax.set_xticks(range(width), [str(i) for i in range(width)], fontsize=7)
        for i, row_names in enumerate(names):  # the category names, written in the cells
            for j, name in enumerate(row_names):
                ax.text(j, i, name, ha="center", va="center", fontsize=4, color="white")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.03)
        fig.tight_layout()
        return fig

    # -- end of fit -------------------------------------------------------------------------------
    def on_fit_end(self, trainer, pl_module) -> None:
        space = pl_module.space
        mode = space.distribution().mode()
        latency = _latency_callback(trainer)
        measured_ms = latency.measure(mode) if latency is not None else None  # collective under DDP
        run_dir = pl_module.run_dir  # collective under DDP
        if not trainer.is_global_zero:
            return
        genotype = space.genotype()
        shape = getattr(trainer.datamodule, "example_shape", None)
        network = derived_network(space, genotype)
        params = sum(p.numel() for p in network.parameters())
        madds = multiply_adds(network, shape) if shape is not None else None
        self.summary = {
            "genotype": genotype.to_dict(),
            "network": type(network).__name__,
            "parameters": params,
            "multiply_adds": madds,
            "input_shape": list(shape) if shape is not None else None,
            "latency_ms": measured_ms,
            "latency_device": str(pl_module.device) if measured_ms is not None else None,
            "epochs": trainer.current_epoch,
            "entropy": float(space.distribution().entropy().detach()),
        }
        write_text_atomic(run_dir / SUMMARY_FILE, json.dumps(self.summary, indent=2) + "\n")
        lines = [
            f"derived architecture ({run_dir / SUMMARY_FILE}):",
            f"  genotype:       {genotype.to_json() if hasattr(genotype, 'to_json') else genotype}",
            f"  network:        {type(network).__name__}, {params / 1e6:.3f}M parameters"
            + (f", {madds / 1e6:.1f}M multiply-adds per example" if madds is not None else ""),
        ]
        if measured_ms is not None:
            lines.append(f"  latency:        {measured_ms:.2f} ms (measured on {pl_module.device})")
        rank_zero_info("\n".join(lines))


def derived_network(space, genotype) -> torch.nn.Module:
    """The plain network of ``genotype`` in ``space`` (DARTS: the evaluation network at search scale)."""
    if hasattr(space, "derived_network"):
        return space.derived_network(genotype, copy_weights=False)
    if isinstance(genotype, DartsGenotype):
        from unas_lightning.spaces.darts_network import DartsNetworkCIFAR

        return DartsNetworkCIFAR(
            genotype, space.in_channels, space.num_classes, space.channels, space.layers, auxiliary=False
        )
    raise TypeError(f"no derived network for {type(space).__name__}: give it a derived_network(genotype) method.")


def multiply_adds(network: torch.nn.Module, shape) -> float:
    """Multiply-adds of one example (FLOPs / 2 of convolutions and matrix products)."""
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(torch.zeros(1, *shape, device=device))
    finally:
        network.train(was_training)
    return counter.get_total_flops() / 2


def _latency_callback(trainer):
    from unas_lightning.latency.callback import LatencyCallback

    return next((cb for cb in trainer.callbacks if isinstance(cb, LatencyCallback)), None)


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
