"""The genotype protocol and the one registry from a space's name to its genotype type.

A genotype is the discrete result of a search, kept as JSON. Every genotype type subclasses
:class:`Genotype` and names its space in the class attribute ``space_name``; defining the class
registers it, so a space defined in a user's own module needs no edit to this package. The registry
is how everything downstream dispatches: loading a genotype file, retraining its network
(:meth:`Genotype.network`), drawing it (the optional :class:`Drawable` interface), summaries.

A genotype's JSON holds ``"space": <space_name>`` and, for types defined outside this package,
``"type": "<module>.<Class>"``, so a file names the code that reads it (as a config's ``class_path``
does) and ``unas-cli``/``visualize`` can load it with no import written by hand.

Examples:
    A genotype of a one-layer space (in a user's module)::

        @dataclass(frozen=True)
        class LayerGenotype(Genotype):
            space_name = "one_layer"
            op: str

            def encode(self):
                return {"op": self.op}

            @classmethod
            def decode(cls, data):
                return cls(op=str(data["op"]))

            def network(self, options):
                return make_network(self.op, options.in_channels, options.num_classes)
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from unas_lightning.utils.files import write_text_atomic
from unas_lightning.utils.imports import import_dotted

_REGISTRY: dict[str, type[Genotype]] = {}
_PACKAGE = __name__.split(".")[0]


@dataclass(frozen=True)
class NetworkOptions:
    """How to build the stand-alone network of a genotype (``RetrainModule`` passes its own settings).

    A genotype's :meth:`Genotype.network` reads the fields that apply to its space and ignores the rest.

    Attributes:
        in_channels: image channels of the data.
        num_classes: classifier outputs.
        kind: which network of the space (e.g. DARTS ``"cifar"`` or ``"imagenet"``); ``"auto"`` is the
            first of ``network_kinds``.
        channels: width (DARTS: initial channels C); None for the space's default.
        layers: depth (DARTS: number of cells); None for the space's default.
        auxiliary: add an auxiliary head where the network has one.
        dropout: dropout before the classifier where the network has one.
    """

    in_channels: int = 3
    num_classes: int = 10
    kind: str = "auto"
    channels: int | None = None
    layers: int | None = None
    auxiliary: bool = False
    dropout: float = 0.0


class Genotype(ABC):
    """A searched architecture of one space: JSON round trip, self-validation, its evaluation network.

    Subclasses set ``space_name`` (registering the type), ``space_title`` (for messages) and
    ``network_kinds``, and implement :meth:`encode`, :meth:`decode` and :meth:`network`. ``decode``
    raises ``ValueError`` naming the node or layer that is wrong; whether a genotype fits a particular
    search space is checked by that space's ``arch_of``.
    """

    space_name: ClassVar[str]
    #: how messages name the space, e.g. "DARTS" (default: ``space_name``)
    space_title: ClassVar[str] = ""
    #: names accepted by ``NetworkOptions.kind``; the first is what "auto" builds
    network_kinds: ClassVar[tuple[str, ...]] = ("default",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("space_name")
        if name is None:
            return
        known = _REGISTRY.get(name)
        # the same class defined again (a reloaded module, a script also imported by name) replaces itself
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"two genotype types name the space {name!r}: {_class_path(known)} and {_class_path(cls)}."
            )
        _REGISTRY[name] = cls

    # -- what a space defines ------------------------------------------------------------------------
    @abstractmethod
    def encode(self) -> dict[str, Any]:
        """The genotype as JSON-able data (without the ``"space"`` field)."""

    @classmethod
    @abstractmethod
    def decode(cls, data: dict[str, Any]) -> Genotype:
        """The genotype from :meth:`encode`'s data; ``ValueError`` naming what is wrong."""

    @abstractmethod
    def network(self, options: NetworkOptions) -> nn.Module:
        """The stand-alone network of this genotype, trained from scratch by ``RetrainModule``."""

    # -- JSON ----------------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """The fields that name the genotype's type: ``"space"``, and ``"type"`` outside this package."""
        head: dict[str, Any] = {"space": self.space_name}
        module = type(self).__module__
        if not module.startswith(f"{_PACKAGE}.") and module != "__main__":  # a script's classes cannot be imported
            head["type"] = _class_path(type(self))
        return head

    def to_dict(self) -> dict[str, Any]:
        return {**self.header(), **self.encode()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genotype:
        """The genotype of whichever registered space ``data["space"]`` names (or of ``cls``'s space)."""
        if not isinstance(data, dict):
            raise ValueError(f"a genotype is a JSON object with a 'space' field, got {type(data).__name__}.")
        own = cls.__dict__.get("space_name")
        space = data.get("space", own)
        if own is not None and space != own:
            raise ValueError(f"genotype is for the {space!r} space, not the {cls.space_title or own} space.")
        body = {k: v for k, v in data.items() if k not in ("space", "type")}
        return genotype_type(space, data.get("type")).decode(body)

    def to_json(self) -> str:
        """Readable JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the genotype atomically (a reader never sees a half-written file)."""
        return write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Genotype:
        return cls.from_json(Path(path).read_text())

    # -- networks ------------------------------------------------------------------------------------
    @classmethod
    def network_kind(cls, kind: str) -> str:
        """``kind`` resolved ("auto": the first of ``network_kinds``); ``ValueError`` for a network the space lacks."""
        if kind == "auto":
            return cls.network_kinds[0]
        if kind not in cls.network_kinds:
            raise ValueError(
                f"network {kind!r} does not fit a {cls.space_title or cls.space_name}-space genotype; "
                f"use one of {list(cls.network_kinds)} (or 'auto')."
            )
        return kind


class Drawable(ABC):
    """The optional ability of a genotype to draw itself (``python -m unas_lightning.analysis.visualize``)."""

    @abstractmethod
    def draw(self, out_dir: Path, stem: str) -> list[Path]:
        """Write drawings into ``out_dir`` with file names starting with ``stem``; return the files."""


class SupportsDropPath(ABC):
    """A network that drops whole paths in training with probability ``drop_path_prob`` (set per epoch)."""

    drop_path_prob: float


def genotype_type(space: str | None, type_path: str | None = None) -> type[Genotype]:
    """The genotype type of ``space``: the class ``type_path`` ("module.Class") names, imported, when given
    (it must belong to ``space``), else the type registered for ``space``."""
    if not isinstance(space, str):
        raise ValueError(f"a genotype's 'space' must be a space name such as 'darts', got {space!r}.")
    if type_path:
        try:
            found = import_dotted(type_path)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(
                f"genotype type {type_path!r} cannot be imported ({err}); is its folder on PYTHONPATH?"
            ) from None
        if not (isinstance(found, type) and issubclass(found, Genotype)) or found.space_name != space:
            raise ValueError(f"{type_path} is not a Genotype type of the {space!r} space.")
        return found
    if space not in _REGISTRY:
        raise ValueError(f"genotype for an unknown space {space!r}; known spaces: {sorted(_REGISTRY)}.")
    return _REGISTRY[space]


def registered_spaces() -> list[str]:
    """Names of the spaces whose genotype types are registered (imported) so far."""
    return sorted(_REGISTRY)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
