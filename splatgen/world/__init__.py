"""The procedural world: objects whose right answer is known.

- :mod:`.grammar` — primitives composed into kinds of object with captions (``parse_prompt("a red mug")``);
- :mod:`.captions` — every caption of the world by id;
- :mod:`.raycast` — the ground-truth renderer (analytic ray casting, independent of the Gaussian renderer)
  and surface samples;
- :mod:`.oracle` — :class:`WorldGuidance`, the exact denoiser of an object's views behind the guidance
  interface;
- :mod:`.metrics` — silhouette IoU, foreground PSNR, depth error, Chamfer distance and the Janus score
  of a generated model against its ground truth (``evaluate_run``);
- :mod:`.clip_eval` — CLIP R-precision by the evaluator CLIP shipped with the bundled prior.

Importing this package loads only the grammar; the rest loads on first use.
"""

from importlib import import_module

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

_LAZY = {
    "WorldGuidance": ".oracle",
    "evaluate_gaussians": ".metrics",
    "evaluate_run": ".metrics",
    "object_sdf": ".raycast",
    "render_world": ".raycast",
    "sample_surface": ".raycast",
}

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
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
