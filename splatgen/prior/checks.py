"""Where the bundled prior lives and whether a prior folder is complete and readable (one clear message if not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Union

from ..errors import ModelLoadError

#: files every prior folder holds (relative paths).
PRIOR_FILES = (
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
    "text_encoder_openclip/open_clip_config.json",
    "text_encoder_openclip/open_clip_model.safetensors",
    "text_encoder_openclip/bpe_simple_vocab_world.txt.gz",
    "evaluator_clip/open_clip_config.json",
    "evaluator_clip/open_clip_model.safetensors",
    "evaluator_clip/bpe_simple_vocab_world.txt.gz",
    "prior_card.json",
)

#: what to do when the bundled prior is missing or broken.
HOW_TO_GET_IT = (
    "The bundled prior ships inside the splatgen package (splatgen/assets/prior/): reinstall splatgen "
    "(pip install -e . from a complete checkout), or rebuild it on a GPU machine with "
    "benchmarks/prior/train_on_gpu.sh (see docs/PRIOR.md); guidance.type=world needs no weights at all."
)


def bundled_prior_path() -> Path:
    """``splatgen/assets/prior`` inside the installed package (it may not exist)."""
    return Path(__file__).resolve().parent.parent / "assets" / "prior"


def check_prior_folder(folder: Union[str, Path]) -> Dict[str, Any]:
    """The prior's card (``prior_card.json``) after checking that every file exists and that the JSON
    files parse and the safetensors headers read.

    Raises:
        ModelLoadError: naming the folder, what is missing or broken, and how to get a good copy.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"the prior folder {str(folder)!r} does not exist. {HOW_TO_GET_IT}")
    missing = [f for f in PRIOR_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(f"the prior folder {str(folder)!r} is incomplete: {missing} missing. {HOW_TO_GET_IT}")
    for rel in PRIOR_FILES:
        path = folder / rel
        try:
            if rel.endswith(".json"):
                json.loads(path.read_text())
            elif rel.endswith(".safetensors"):
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as f:
                    keys = list(f.keys())
                if not keys:
                    raise ValueError("no tensors")
        except Exception as exc:  # any failure to read is the same for the user: a broken file
            raise ModelLoadError(
                f"the prior folder {str(folder)!r} holds a corrupt file {rel} ({type(exc).__name__}: "
                f"{str(exc).strip()[:200]}). {HOW_TO_GET_IT}"
            ) from exc
    return json.loads((folder / "prior_card.json").read_text())
