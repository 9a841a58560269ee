"""The argument parser behind ``unas-cli``: its description, integer batch limits, and readable errors.

jsonargparse reports a rejected value as ~50 usage lines followed by a nested account of every union
branch it tried, ending in ``Given value: ...``. ``UnasArgumentParser`` prints one line instead, with
the cause, the config file the value came from and the key last::

    unas-cli fit: error: expected a float, got: abc (key model.init_args.gen_lambda, in my.yaml)

and a YAML syntax error names the file, line and column rather than ``<unicode string>``. Set
``JSONARGPARSE_DEBUG=1`` to get jsonargparse's own exception instead.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, Union

import yaml
from lightning.pytorch.cli import LightningArgumentParser

#: Trainer arguments whose integer values mean "this many batches" and floats "this fraction".
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")

_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")
_STRUCTURE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
)


def description() -> str:
    """``unas-cli --help``'s description: what the tool does and the estimators it ships."""
    from unas_lightning import estimators

    parts = ("BlackBox", "Estimator", "EstimatorOutput", "LossFn", "Relaxation")  # building blocks
    names = [n for n in estimators.__all__ if n not in parts]
    return (
        "unas-cli: neural architecture search (UNAS) and retraining on PyTorch Lightning. "
        "`unas-cli fit --config configs/search/quickstart.yaml` runs a search; `unas-cli fit|test --config "
        "configs/retrain/...yaml` retrains and tests a genotype; `tensorboard --logdir runs` shows the runs. "
        f"Estimators (--model.init_args.estimator.class_path): {', '.join(names)}; one's arguments: `unas-cli fit "
        "--config configs/search/quickstart.yaml --model.estimator.help Rebar`."
    )


def config_files(args: Sequence[str]) -> list[Path]:
    """The ``--config``/``-c`` files among command-line ``args``, in the order given."""
    files, args = [], list(args)
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(Path(args[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return files


def _plain(text: str) -> str:
    return _CLASS.sub(r"\1", text).strip().rstrip(".")


def _lookup(data: Any, key: str) -> bool:
    """Whether the dotted ``key`` (``init_args`` optional, as jsonargparse allows) is set in ``data``."""
    parts = [p for p in key.split(".") if p != "init_args"]

    def walk(node: Any, rest: list[str]) -> bool:
        if not rest:
            return True
        if not isinstance(node, dict):
            return False
        if rest[0] in node:
            return walk(node[rest[0]], rest[1:])
        return "init_args" in node and walk(node["init_args"], rest)

    return walk(data, parts)


def _normal(key: str) -> str:
    return ".".join(p for p in key.split(".") if p != "init_args")


def _on_command_line(key: str, args: Sequence[str]) -> bool:
    """Whether an option of ``args`` sets ``key`` or a part of it (``--model.init_args.x`` sets ``model.x``)."""
    want = _normal(key)
    for arg in args:
        if not arg.startswith("--") or arg.startswith("--config"):
            continue
        given = _normal(arg[2:].split("=", 1)[0])
        if want == given or want.startswith(f"{given}.") or given.startswith(f"{want}."):
            return True
    return False


def _source(key: str | None, files: list[Path], args: Sequence[str] = ()) -> str:
    """Where ``key``'s value came from: the command line (it wins), else the last config file setting it."""
    if key and _on_command_line(key, args):
        return "on the command line"
    if key:
        for path in reversed(files):
            try:
                if _lookup(yaml.safe_load(path.read_text()), key):
                    return f"in {path}"
            except (OSError, yaml.YAMLError):
                continue
    return "on the command line" if key else ""


def _yaml_error(files: list[Path]) -> str | None:
    for path in files:
        try:
            yaml.safe_load(path.read_text())
        except OSError:
            continue
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = getattr(err, "problem", None) or str(err)
            return f"{where}: YAML syntax error: {problem}"
    return None


def explain(message: str, args: Sequence[str] = ()) -> str:
    """jsonargparse's error ``message`` as one line: the cause, then the key and where it was given.

    ``args`` is the command line, to tell its options from the ``--config`` files it names.
    """
    files = config_files(args)
    if "Problems parsing config" in message and "<unicode string>" in message:
        found = _yaml_error(files)
        if found:
            return found
    lines = message.splitlines()
    key: list[str] = []
    cause, given, depth = None, None, -1
    kinds: list[str] = []  # "Expected a <type>" alternatives of one union, at the cause's depth
    for line in lines:
        text = line.strip().lstrip("- ").strip()
        indent = len(line) - len(line.lstrip())
        head = re.match(r'Parser key "([^"]+)":?\s*(.*)', text)
        if head:
            key.append(head.group(1))
            rest = head.group(2)
            if rest and indent >= depth:
                cause, depth = rest, indent
            continue
        if text.startswith("Problem with given class_path"):
            key.append("init_args")
            continue
        if text.startswith("Given value:"):
            if given is None and cause is not None:
                given = text.split(":", 1)[1].strip()
            continue
        if not text or text.startswith(_STRUCTURE) or "NoneType" in text:
            continue
        kind = re.fullmatch(r"Expected an? <class '(?:[\w.]+\.)?(\w+)'>", text)
        if kind and indent == depth and kinds:
            kinds.append(kind.group(1))
            continue
        if indent >= depth:
            cause, depth, given = text, indent, None
            kinds = [kind.group(1)] if kind else []
    if cause is None:
        return " ".join(line.strip() for line in lines if not line.strip().startswith("Given value"))
    nested = re.fullmatch(r"NestedArg\(key='[^']*', val='(.*)'\)", given or "")
    given = nested.group(1) if nested else given
    option = re.match(r"Option '([^']+)' is not accepted", cause)
    if option:
        key.append(option.group(1))
        cause, given = f"no such option {option.group(1)!r}", None
    if key and key[-1] == "init_args":
        key.pop()
    dotted = ".".join(key) or None
    cause = _plain(cause)
    got = re.fullmatch(r"Expected an? (\w+)(?:\.?\s*Got value:\s*(.*))?", cause)
    if got and (got.group(2) is not None or given is not None):
        value = got.group(2) if got.group(2) is not None else given
        expected = " or ".join(f"{_article(k)} {k}" for k in dict.fromkeys(kinds or [got.group(1)]))
        cause = f"expected {expected}, got {value!r}"
    elif given is not None and "Given value" not in cause and given not in cause:
        cause = f"{cause[0].lower()}{cause[1:]}, got {given!r}"
    cause = cause[0].lower() + cause[1:] if cause[:1].isupper() and cause[1:2].islower() else cause
    where = ", ".join(filter(None, [f"key {dotted}" if dotted else None, _source(dotted, files, args)]))
    return f"{cause} ({where})" if where else cause


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


class UnasArgumentParser(LightningArgumentParser):
    """``LightningArgumentParser`` with unas-cli's description and one-line errors (see the module).

    It also reads ``--trainer.limit_*_batches 1`` as one batch: Lightning's annotation
    ``Optional[Union[int, float]]`` reaches jsonargparse as ``Union[float, int, None]`` (``typing``
    caches the first spelling of an equal union), which turned every integer into a float, and 1.0 means
    100% of the batches.
    """

    #: the command line being parsed (set by ``UnasCLI`` before parsing), to find the config files
    given_args: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("description", description())
        super().__init__(*args, **kwargs)

    def ints_before_floats(self) -> None:
        """Give the trainer's batch limits the annotation int-first, so "1" stays the integer 1."""
        typehint = Union[int, float, None]  # noqa: UP007 (the order is the point: int is tried first)
        for action in self._actions:
            if action.dest in {f"trainer.{name}" for name in BATCH_LIMITS} and hasattr(action, "_typehint"):
                action._typehint = typehint

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or _debugging():
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        line = explain(message, self.given_args)
        sys.stderr.write(f"(`{prog} --help` lists the options)\n{prog}: error: {line}\n")
        sys.exit(2)


def _debugging() -> bool:
    return os.environ.get("JSONARGPARSE_DEBUG", "").lower() in ("1", "true", "yes", "on")
