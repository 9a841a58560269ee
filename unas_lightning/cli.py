"""``unas-cli``: LightningCLI with the model and the data chosen by ``class_path`` in YAML."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from unas_lightning.checkpoints import check_checkpoint_fits, find_last_checkpoint, run_roots
from unas_lightning.data import MissingDatasetError


class UnasCLI(LightningCLI):
    """``unas-cli fit|validate|test --config configs/...yaml``.

    * ``--model`` is any LightningModule (``SearchModule`` for search, later ``RetrainModule``) and
      ``--data`` any LightningDataModule, both given by ``class_path``; the estimator and the search
      space inside the model are chosen the same way (``--model.estimator.class_path ...``).
    * ``seed_everything`` in the config seeds Python, NumPy and torch on every rank.
    * ``--ckpt_path last`` resumes from the newest ``last.ckpt`` of the run (any version directory;
      a fresh run when there is none), and a checkpoint that does not fit the model is refused
      before anything is written.
    * ``--trainer.strategy ddp`` is mapped to ``ddp_find_unused_parameters_true``: a search step
      runs only the sampled operations, so most supernet weights are unused in any one step.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        trainer = config.get("trainer")
        if trainer is not None and trainer.get("strategy") in ("ddp", "ddp_spawn"):
            trainer["strategy"] = f"{trainer['strategy']}_find_unused_parameters_true"

    def before_fit(self) -> None:
        self._resolve_checkpoint()

    def before_validate(self) -> None:
        self._check_has_step("validation_step", "validate")
        self._resolve_checkpoint()

    def before_test(self) -> None:
        self._check_has_step("test_step", "test")
        self._resolve_checkpoint()

    def _check_has_step(self, step: str, subcommand: str) -> None:
        """``unas-cli test`` with a search config: say what to run instead of Lightning's traceback."""
        if getattr(type(self.model), step) is getattr(L.LightningModule, step):
            raise ValueError(
                f"a {type(self.model).__name__} has no {step}: `unas-cli {subcommand}` evaluates a trained network. "
                "A search's result is its genotype.json; retrain and test it with a retrain config, e.g. "
                "`unas-cli fit --config configs/retrain/quick_fmnist.yaml --model.init_args.genotype "
                "runs/quickstart/version_0/genotype.json`, then `unas-cli test` with the same config and "
                "--ckpt_path runs/retrain_quick/version_0/checkpoints/last.ckpt."
            )

    def _resolve_checkpoint(self) -> None:
        config = self.config_init[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            roots = run_roots(self.trainer)
            found = find_last_checkpoint(roots)
            where = ", ".join(str(r) for r in roots) or self.trainer.default_root_dir
            rank_zero_info(f"resuming from {found}" if found else f"no last.ckpt under {where}: starting a fresh run")
            config["ckpt_path"] = ckpt_path = str(found) if found else None
        if ckpt_path not in (None, "best", "hpc") and not str(ckpt_path).startswith(("http://", "https://", "s3://")):
            if not Path(ckpt_path).is_file():
                raise FileNotFoundError(f"checkpoint {ckpt_path} not found; pass an existing .ckpt file or 'last'.")
            check_checkpoint_fits(self.model, ckpt_path)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``unas-cli``; user errors exit with status 2 and a one-line message."""
    try:
        UnasCLI(args=args)
    except (MissingDatasetError, FileNotFoundError, ValueError, MisconfigurationException) as err:
        print(f"unas-cli: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
