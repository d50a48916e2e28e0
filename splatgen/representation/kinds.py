"""The representations by kind: the one table of ``model.type`` (its keys are ``config.MODEL_TYPES``, a test
pins them). A new representation is a :class:`~splatgen.representation.Representation` subclass with its
``kind``, its files and its loader, added here and to ``config.MODEL_TYPES``."""

from __future__ import annotations

from typing import Dict, Type

import torch

from ..config import Config
from ..errors import ConfigError
from . import Representation
from .gaussian import GaussianRepresentation
from .nerf import NerfRepresentation

#: ``model.type`` -> the representation; each class's ``kind`` is its key.
REPRESENTATIONS: Dict[str, Type[Representation]] = {
    cls.kind: cls for cls in (GaussianRepresentation, NerfRepresentation)
}


def representation_class(kind: str) -> Type[Representation]:
    """The class of ``model.type=kind``.

    Raises:
        ConfigError: no representation has that kind.
    """
    if kind not in REPRESENTATIONS:
        raise ConfigError(f"model.type={kind!r} is not allowed; choose one of {list(REPRESENTATIONS)}")
    return REPRESENTATIONS[kind]


def build_representation(cfg: Config, device: torch.device, generator: torch.Generator) -> Representation:
    """The representation ``cfg.model.type`` names, initialised from ``generator``."""
    return representation_class(cfg.model.type)(cfg, device, generator)
