"""The procedural world: objects whose right answer is known (issue 3).

- :mod:`.grammar` — primitives composed into kinds of object with captions (``parse_prompt("a red mug")``);
- :mod:`.raycast` — the ground-truth renderer (analytic ray casting, independent of the Gaussian renderer)
  and surface samples;
- :mod:`.oracle` — :class:`WorldGuidance`, the exact denoiser of an object's views behind the guidance
  interface;
- :mod:`.metrics` — silhouette IoU, foreground PSNR, depth error, Chamfer distance and the Janus score
  of a generated model against its ground truth (``evaluate_run``).
"""

from .grammar import (
    COLOURS,
    FRONT_BACK_KINDS,
    KINDS,
    Primitive,
    WorldObject,
    is_world_prompt,
    make_object,
    parse_prompt,
    vocabulary,
)
from .metrics import evaluate_gaussians, evaluate_run
from .oracle import WorldGuidance
from .raycast import object_sdf, render_world, sample_surface

__all__ = [
    "COLOURS",
    "FRONT_BACK_KINDS",
    "KINDS",
    "Primitive",
    "WorldObject",
    "is_world_prompt",
    "make_object",
    "parse_prompt",
    "vocabulary",
    "WorldGuidance",
    "evaluate_gaussians",
    "evaluate_run",
    "object_sdf",
    "render_world",
    "sample_surface",
]
