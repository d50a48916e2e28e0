"""The bundled prior as splatgen uses it: where it is, whether a prior folder is sound, and what its text
encoder should warn about.

The shipped folder (``splatgen/assets/prior/``, :func:`bundled_prior_path`) is an ordinary pixel-space
diffusers model: ``unet/`` + ``scheduler/`` + ``text_encoder_openclip/`` (an open_clip CLIP whose text tower
conditions the UNet) + ``evaluator_clip/`` (a second CLIP for CLIP R-precision, see
:mod:`splatgen.world.clip_eval`) + ``prior_card.json``. It loads through
:class:`splatgen.guidance.PixelGuidance` like any pixel-space model. The code that trained it lives in the
repository's ``prior_training/`` folder, not in the installed package.
"""

from .checks import HOW_TO_GET_IT, PRIOR_FILES, bundled_prior_path, check_prior_folder, is_prior_folder, prompt_check

__all__ = ["HOW_TO_GET_IT", "PRIOR_FILES", "bundled_prior_path", "check_prior_folder", "is_prior_folder", "prompt_check"]
