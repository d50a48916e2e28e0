"""splatgen's own small text-to-image prior of the procedural world (issue 5), trained from scratch.

The shipped folder (``splatgen/assets/prior/``, see :func:`bundled_prior_path`) is an ordinary pixel-space
diffusers model: ``unet/`` + ``scheduler/`` + ``text_encoder_openclip/`` (an open_clip CLIP whose text tower
conditions the UNet) + ``evaluator_clip/`` (a second CLIP for CLIP R-precision) + ``prior_card.json``. It loads
through :class:`splatgen.guidance.PixelGuidance` like any pixel-space model: importing this package registers
the open_clip text encoder under ``text_encoder_openclip`` in ``PROMPT_ENCODER_LOADERS``.

- :mod:`.data` — captioned views of the world (rendered on the fly), held-out pairs, the view pool;
- :mod:`.clip_model` — the CLIP configuration, folder format and :class:`OpenCLIPPromptEncoder`;
- :mod:`.unet` — the UNet configuration, noise schedule, loss, EMA and DDIM sampler;
- :mod:`.train` — ``python -m splatgen.prior.train {clip,evaluator,unet,all,export,import}``;
- :mod:`.evaluate` — CLIP R-precision, 2D samples, grids;
- :mod:`.card` — the model card; :mod:`.checks` — where the bundled prior is and whether a folder is sound.
"""

from .checks import bundled_prior_path, check_prior_folder
from .clip_model import EVALUATOR_FOLDER, TEXT_ENCODER_FOLDER, OpenCLIPPromptEncoder, register
from .data import HELD_OUT_PAIRS, CaptionTable, WorldViews

register()

__all__ = [
    "EVALUATOR_FOLDER",
    "HELD_OUT_PAIRS",
    "TEXT_ENCODER_FOLDER",
    "CaptionTable",
    "OpenCLIPPromptEncoder",
    "WorldViews",
    "bundled_prior_path",
    "check_prior_folder",
    "register",
]
