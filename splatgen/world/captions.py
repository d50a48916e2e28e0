"""Every caption of the procedural world by integer id (:class:`CaptionTable`): what the bundled prior was
trained with and what the evaluator CLIP ranks."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..cameras import DIRECTIONS
from .grammar import COLOURS, KINDS, caption_for


class CaptionTable:
    """Every caption the prior is trained with, by integer id.

    ``id = ((kind * (C + 1) + colour) * (D + 1) + direction)`` for ``kind < K``, ``colour <= C`` (``C``: no
    colour, ``"a mug"``), ``direction <= D`` (``D`` = :data:`PLAIN`: no direction); the last id,
    :attr:`uncond_id`, is the empty caption "" (classifier-free guidance's unconditional prompt).
    """

    def __init__(self) -> None:
        self.kinds: Tuple[str, ...] = tuple(KINDS)
        self.colours: Tuple[str, ...] = tuple(COLOURS)
        self.directions: Tuple[str, ...] = tuple(DIRECTIONS)
        K, C, D = len(self.kinds), len(self.colours), len(self.directions)
        self.num_pairs = K * C
        texts: List[str] = []
        for k in range(K):
            for c in range(C + 1):
                base = caption_for(self.kinds[k], self.colours[c]) if c < C else f"a {self.kinds[k]}"
                for d in range(D + 1):
                    texts.append(base if d == D else f"{base}, {self.directions[d]} view")
        texts.append("")
        self.texts: List[str] = texts
        self.uncond_id = len(texts) - 1

    def __len__(self) -> int:
        return len(self.texts)

    def pair_id(self, kind: str, colour: str) -> int:
        return self.kinds.index(kind) * len(self.colours) + self.colours.index(colour)

    def pair(self, pair_id: int) -> Tuple[str, str]:
        C = len(self.colours)
        return self.kinds[pair_id // C], self.colours[pair_id % C]

    def caption_ids(self, pair_ids: Tensor, dir_ids: Tensor, no_colour: Optional[Tensor] = None) -> Tensor:
        """Caption ids [N] of pairs [N] seen from directions [N] (``PLAIN``: no direction); ``no_colour`` [N]
        bool drops the colour (``"a mug, front view"``)."""
        C, D = len(self.colours), len(self.directions)
        kind = torch.div(pair_ids, C, rounding_mode="floor")
        colour = pair_ids % C
        if no_colour is not None:
            colour = torch.where(no_colour, torch.full_like(colour, C), colour)
        return (kind * (C + 1) + colour) * (D + 1) + dir_ids

    def caption(self, kind: str, colour: Optional[str], direction: Optional[str]) -> str:
        base = caption_for(kind, colour) if colour is not None else f"a {kind}"
        return base if direction is None else f"{base}, {direction} view"
