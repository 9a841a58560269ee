"""``unas-cli``: LightningCLI with the model and the data chosen by ``class_path`` in YAML."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from unas_lightning.callbacks.graceful_shutdown import (
    GRACE_SECONDS,
    GracefulShutdown,
    RunInterrupted,
    describe_traceback,
)
from unas_lightning.callbacks.latest_link import LATEST, LatestRunLink
from unas_lightning.cli.checkpoints import (
    check_checkpoint_fits,
    check_written_by,
    find_last_checkpoint,
    load_checkpoint,
)
from unas_lightning.cli.parser import UnasArgumentParser, config_files
from unas_lightning.data.datamodules import MissingDatasetError, VisionDataModule
from unas_lightning.utils.imports import import_dotted

if TYPE_CHECKING:
    from lightning.pytorch.strategies import DDPStrategy

DDP_TIMEOUT = 1800.0  # seconds, torch.distributed's default


class UnasCLI(LightningCLI):
    """``unas-cli fit|validate|test --config configs/...yaml``.

    * ``--model`` is any LightningModule (``SearchModule`` for search, ``RetrainModule`` for retraining)
      and ``--data`` any LightningDataModule, both given by ``class_path``; the estimator and the
      search space inside the model are chosen the same way (``--model.init_args.estimator.class_path``).
    * ``seed_everything`` in the config seeds Python, NumPy and torch on every rank.
    * Where a run writes: every logger writes under ``--trainer.default_root_dir`` (it is linked to the
      loggers' ``save_dir``; the configs name only the experiment, ``runs/<name>/version_N``), and
      ``runs/<name>/latest`` points at the newest run's version folder (``LatestRunLink``).
    * ``--ckpt_path last`` resumes from the newest ``last.ckpt`` of the run (a fresh run when there is
      none). A run given a checkpoint of its own experiment continues in that checkpoint's version
      folder (one folder, one ``genotypes.jsonl`` per search, resumed or not); ``test`` logs there too.
    * A checkpoint is read before anything is built: an unreadable file, one written by another kind of
      module (a retrain checkpoint given to a search config, or the reverse) or one that does not fit the
      model stops with a message. As in LightningCLI, the model's hyperparameters stored in the
      checkpoint win over the config's; the ones that differ are printed (a retrain checkpoint stores
      its genotype, so ``test`` rebuilds the network its weights belong to).
    * ``--trainer.strategy ddp`` is mapped to ``ddp_find_unused_parameters_true``: a search step
      runs only the sampled operations, so most supernet weights are unused in any one step. When rank
      0 fails, the other ranks are stopped with it.
    * A hang watchdog under DDP: a collective that does not complete within ``--ddp_timeout`` seconds
      (default 1800) fails the run with one line naming the hook it waited in (a DDP strategy given by
      name gets this timeout).
    * SIGTERM or Ctrl-C (``GracefulShutdown``, added to every fit): every rank stops at the same batch,
      ``last.ckpt`` is written there, the run exits with 128 + the signal; ``--ckpt_path last`` resumes it.
    * Errors a user can cause exit with status 2 and one line: the cause, the key and the file.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", UnasArgumentParser)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    # -- parsing ------------------------------------------------------------------------------------
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        cast(UnasArgumentParser, parser).ints_before_floats()  # parser_class
        parser.add_argument(
            "--ddp_timeout",
            type=float,
            default=DDP_TIMEOUT,
            help="seconds a DDP collective may wait before the run fails, naming the hook it waits in",
        )
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir", compute_fn=_root)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        given = tuple(sys.argv[1:] if args is None else args) if not isinstance(args, (dict, Namespace)) else ()
        UnasArgumentParser.given_args = given
        _refuse_logger_save_dir(given)
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Resolve ``last``, read the checkpoint, refuse one of another module, then LightningCLI's merge."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            roots = _config_roots(config)
            found = find_last_checkpoint([r for r in roots if r.is_dir()])
            where = ", ".join(str(r) for r in roots)
            rank_zero_info(f"resuming from {found}" if found else f"no last.ckpt under {where}: starting a fresh run")
            config["ckpt_path"] = ckpt_path = str(found) if found else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return  # a missing file is reported by _resolve_checkpoint once the model is known
        checkpoint = load_checkpoint(ckpt_path)
        self._loaded = (str(ckpt_path), checkpoint)  # read once: _resolve_checkpoint checks the same contents
        model_class = config.model.get("class_path") if isinstance(config.get("model"), Namespace) else None
        check_written_by(checkpoint, model_class, ckpt_path)
        _continue_in_version(config, Path(ckpt_path))
        before = _model_args(config)
        super()._parse_ckpt_path()
        _report_overrides(before, _model_args(self.config[subcommand]), ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, with a DDP strategy named in the config built with ``--ddp_timeout`` (and 'ddp' allowing
        unused parameters)."""
        config = self.config_init.get(self.subcommand, self.config_init) if self.subcommand else self.config_init
        strategy = (config.get("trainer") or {}).get("strategy")
        timeout = (self.config.get(self.subcommand, self.config) if self.subcommand else self.config).get("ddp_timeout")
        if "strategy" not in kwargs and isinstance(strategy, str):
            kwargs["strategy"] = ddp_strategy(strategy, DDP_TIMEOUT if timeout is None else timeout)
        return super().instantiate_trainer(**kwargs)

    def before_instantiate_classes(self) -> None:
        """A data set that is not on disk stops the run before the model is built (a paper-size supernet takes
        seconds): the configured data module alone is built and checks its parts (``check_parts``; its
        ``prepare_data`` checks again, after a download)."""
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        data = config.get("data")
        if not isinstance(data, Namespace) or not isinstance(data.get("class_path"), str):
            return
        try:
            cls = import_dotted(data.class_path)
        except (ImportError, AttributeError, ValueError):
            return  # the class is resolved, and reported, when the classes are built
        init = data.get("init_args")
        args = init.as_dict() if isinstance(init, Namespace) else {}
        if isinstance(cls, type) and issubclass(cls, VisionDataModule) and not args.get("download"):
            cls(**args).check_parts()

    # -- before each subcommand ---------------------------------------------------------------------
    def before_fit(self) -> None:
        self._check_writable()
        self._resolve_checkpoint()
        callbacks = self.trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning, not declared
        for cls in (LatestRunLink, GracefulShutdown):
            if not any(isinstance(cb, cls) for cb in callbacks):
                callbacks.append(cls())

    def before_validate(self) -> None:
        self._check_has_step("validation_step", "validate")
        self._check_writable()
        self._resolve_checkpoint()

    def before_test(self) -> None:
        self._check_has_step("test_step", "test")
        self._check_writable()
        self._resolve_checkpoint()

    def after_fit(self) -> None:
        """Print where the run's outputs are and the command that tests them (rank 0)."""
        logger = self.trainer.logger
        log_dir = getattr(logger, "log_dir", None) if self.trainer.is_global_zero and logger is not None else None
        if log_dir is None:
            return
        folder = Path(log_dir)  # not Trainer.log_dir: a collective, and the other ranks are done
        latest = folder.parent / LATEST
        shown = latest if latest.is_symlink() and latest.resolve() == folder.resolve() else folder
        lines = [f"outputs of this run: {folder} (also {latest})" if shown == latest else f"outputs: {folder}"]
        files = config_files(UnasArgumentParser.given_args)
        if files and _has_step(self.model, "test_step"):
            configs = " ".join(f"--config {shlex.quote(str(f))}" for f in files)
            lines.append(f"test it: unas-cli test {configs} --ckpt_path {shown}/checkpoints/last.ckpt")
        rank_zero_info("\n".join(lines))

    def _check_has_step(self, step: str, subcommand: str) -> None:
        """``unas-cli test`` with a search config: say what to run instead of Lightning's traceback."""
        if not _has_step(self.model, step):
            raise ValueError(
                f"a {type(self.model).__name__} has no {step}: `unas-cli {subcommand}` evaluates a trained network. "
                "A search's result is its genotype.json; retrain and test it with a retrain config, e.g. "
                "`unas-cli fit --config configs/retrain/quick_fmnist.yaml --model.init_args.genotype "
                "runs/quickstart/latest/genotype.json`, then `unas-cli test --config configs/retrain/quick_fmnist.yaml "
                "--ckpt_path runs/retrain_quick/latest/checkpoints/last.ckpt`."
            )

    def _check_writable(self) -> None:
        """Stop before the run when its output folder cannot be created or written."""
        root = Path(self.trainer.default_root_dir)
        existing = next(p for p in [root, *root.absolute().parents] if p.exists())  # nothing is created here
        problem = None
        if not existing.is_dir():
            problem = f"{existing} is a file"
        elif not os.access(existing, os.W_OK | os.X_OK):
            problem = f"{existing} is not writable"
        if problem:
            raise ValueError(
                f"cannot write the run's outputs under {root} ({problem}): choose a writable folder with "
                "--trainer.default_root_dir."
            )

    def _resolve_checkpoint(self) -> None:
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt_path in (None, "best", "hpc") or str(ckpt_path).startswith(("http://", "https://", "s3://")):
            return
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"checkpoint {ckpt_path} not found; pass an existing .ckpt file or 'last'.")
        path, checkpoint = getattr(self, "_loaded", (None, None))
        check_checkpoint_fits(self.model, ckpt_path, checkpoint if path == str(ckpt_path) else None)

    # -- running ------------------------------------------------------------------------------------
    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
            _stop_other_ranks(self.trainer, wait=GRACE_SECONDS)  # done: no rank outlives rank 0, even by a moment
        except RunInterrupted:
            _stop_other_ranks(self.trainer, wait=GRACE_SECONDS)  # they stop at the same batch: let them finish
            raise
        except BaseException as err:
            # a collective that failed on rank 0 usually means another rank left it first (its own collective
            # timed out): give the others the grace to end and print their reason, the hook they waited in,
            # before they are stopped; on any other error they are stopped at once
            _stop_other_ranks(self.trainer, wait=GRACE_SECONDS if collective_failure(err) is not None else 0.0)
            raise


def _has_step(model: object, step: str) -> bool:
    """Whether ``model`` defines ``step`` (``test_step``, ...) rather than inheriting LightningModule's stub."""
    return getattr(type(model), step) is not getattr(L.LightningModule, step)


def _root(default_root_dir: str | os.PathLike[str] | None) -> str:
    return str(default_root_dir) if default_root_dir else os.getcwd()


def _logger_configs(config: Namespace) -> list[Namespace]:
    loggers = config.trainer.get("logger") if config.get("trainer") is not None else None
    loggers = loggers if isinstance(loggers, list) else [loggers]
    return [lg for lg in loggers if isinstance(lg, Namespace) and isinstance(lg.get("init_args"), Namespace)]


def _logger_root(logger: Namespace) -> Path:
    """``save_dir/name``: where a TensorBoard or CSV logger puts its version folders."""
    args = logger.init_args
    name = args.get("name", "lightning_logs")
    return Path(args.get("save_dir") or ".") / (name or "")


def _config_roots(config: Namespace) -> list[Path]:
    """Folders that may hold this run's checkpoints: each logger's root (``save_dir/name``, not the other
    experiments beside it), the checkpoint callbacks' folders, and the root dir when there is no logger."""
    roots = [_logger_root(lg) for lg in _logger_configs(config)]
    if not roots:
        roots.append(Path(_root(config.trainer.get("default_root_dir"))))
    for cb in config.trainer.get("callbacks") or []:
        dirpath = cb.get("init_args", {}).get("dirpath") if isinstance(cb, Namespace) else None
        if dirpath:
            roots.append(Path(dirpath))
    return list(dict.fromkeys(roots))


def _continue_in_version(config: Namespace, ckpt_path: Path) -> None:
    """When ``ckpt_path`` is ``<logger root>/<version>/checkpoints/*.ckpt``, log into that version again."""
    ckpt = ckpt_path.resolve()
    for logger in _logger_configs(config):
        root = _logger_root(logger).resolve()
        if logger.init_args.get("version") is not None or "version" not in logger.init_args:
            continue
        try:
            parts = ckpt.relative_to(root).parts
        except ValueError:
            continue
        if len(parts) >= 3 and parts[1] == "checkpoints":
            number = re.fullmatch(r"version_(\d+)", parts[0])
            logger.init_args["version"] = int(number.group(1)) if number else parts[0]


def _model_args(config: Namespace) -> dict[str, Any]:
    model = config.get("model")
    if not isinstance(model, Namespace):
        return {}
    out = dict(model.get("init_args") or {})
    out.update(model.get("dict_kwargs") or {})
    return out


def _report_overrides(before: dict[str, Any], after: dict[str, Any], ckpt_path: str | os.PathLike[str]) -> None:
    """Say which model arguments the checkpoint's hyperparameters replaced (LightningCLI does it silently)."""
    changed = [k for k, v in after.items() if k in before and not _same(k, before[k], v)]
    if changed:
        rank_zero_info(
            f"{ckpt_path} stores its own {', '.join(changed)}: the checkpoint's are used, not the config's "
            "(the weights belong to them)."
        )


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key == "genotype":  # a name or path in the config, the genotype's dict in the checkpoint
        from unas_lightning.genotypes import load_genotype

        try:
            return load_genotype(a).to_dict() == load_genotype(b).to_dict()
        except (OSError, ValueError, KeyError, TypeError):
            return False
    return False


def _refuse_logger_save_dir(args: tuple[str, ...]) -> None:
    """A logger ``save_dir`` given by hand would be replaced by ``default_root_dir``: say so instead."""
    given = [a for a in args if re.match(r"--trainer\.logger(\.init_args)?\.save_dir(=|$)", a)]
    for path in config_files(args):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # reported by the parser
        trainer = data.get("trainer") if isinstance(data, dict) else None
        if not isinstance(trainer, dict):
            continue
        loggers = trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            save_dir = logger.get("init_args", {}).get("save_dir") if isinstance(logger, dict) else None
            if save_dir is not None and str(save_dir) != _root(trainer.get("default_root_dir")):  # a saved config
                given.append(f"trainer.logger save_dir: {save_dir} in {path}")
    if given:
        raise ValueError(
            f"{given[0]}: unas-cli writes every logger under --trainer.default_root_dir; set that instead "
            "(the logger's name is the experiment's folder under it)."
        )


def _stop_other_ranks(trainer: L.Trainer | None, wait: float = 0.0) -> None:
    """Rank 0 stopped: end the processes it launched (after ``wait`` seconds), so that none outlives it."""
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    procs = getattr(launcher, "procs", None)
    if not procs or launcher is None:
        return
    deadline = time.monotonic() + wait
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
    launcher.kill(signal.SIGKILL)
    for proc in procs:
        proc.wait()


def ddp_strategy(name: str, timeout: float) -> str | DDPStrategy:
    """The strategy ``name`` of Lightning's registry; a DDP one built with a collective ``timeout`` (seconds),
    'ddp' and 'ddp_spawn' allowing unused parameters. Any other name is returned as it is."""
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    if not timeout > 0:
        raise ValueError(f"--ddp_timeout must be > 0 seconds, got {timeout}.")
    if name in ("ddp", "ddp_spawn"):
        name = f"{name}_find_unused_parameters_true"
    entry = dict.get(StrategyRegistry, name)  # the entry (class, init params), not an instance
    if entry is None or not issubclass(entry["strategy"], DDPStrategy):
        return name
    return entry["strategy"](**{**entry["init_params"], "timeout": timedelta(seconds=timeout)})


def collective_failure(err: BaseException) -> str | None:
    """One line for a failed or timed-out torch.distributed collective (the hook it waited in), else None."""
    tb, in_dist = err.__traceback__, False
    while tb is not None:
        in_dist = in_dist or "torch/distributed" in tb.tb_frame.f_code.co_filename.replace(os.sep, "/")
        tb = tb.tb_next
    if not in_dist or not isinstance(err, RuntimeError):
        return None
    where = describe_traceback(err.__traceback__)
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    if "EADDRINUSE" in str(err) or "address already in use" in str(err).lower():
        return (
            f"rank {rank}: the DDP rendezvous port MASTER_PORT={os.environ.get('MASTER_PORT', '?')} is in use (another "
            "DDP run on this machine took it between Lightning's choice and its use): run again, or set MASTER_PORT "
            "to a free port for each run started at the same time."
        )
    timed_out = re.search(r"timed? ?out", str(err), re.IGNORECASE) is not None
    what = "did not complete in time (--ddp_timeout)" if timed_out else "failed"
    return (
        f"rank {rank}: a DDP collective {what} in {where}: "
        f"{text}. The ranks were in different collectives (a hook that runs one on some ranks only: see "
        "docs/contracts.md, DDP-safe hooks) or another rank died."
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``unas-cli``; user errors exit with status 2 and a one-line message."""
    try:
        UnasCLI(args=args)
    except RuntimeError as err:
        line = collective_failure(err)
        if line is None:
            raise
        print(f"unas-cli: error: {line}", file=sys.stderr)
        raise SystemExit(1) from None
    except (MissingDatasetError, FileNotFoundError, ValueError, MisconfigurationException) as err:
        hint = ""
        if isinstance(err, MisconfigurationException) and "gpu" in str(err).lower():
            hint = " This config asks for a GPU; on a machine without one pass --trainer.accelerator cpu."
        print(f"unas-cli: error: {err}{hint}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
