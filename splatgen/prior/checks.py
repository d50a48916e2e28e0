"""Where the bundled prior lives, whether a prior folder is complete and readable (one clear message if not),
and the check its text encoder runs on prompts (the world's vocabulary and the held-out pairs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

from ..errors import ModelLoadError, short
from ..resources import bundled_prior_path  # noqa: F401  (re-exported by splatgen.prior)
from ..world.grammar import COLOUR_ALIASES, COLOURS, is_world_prompt, parse_prompt, vocabulary

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
    "benchmarks/prior/train_on_gpu.sh from a checkout (see docs/PRIOR.md); guidance.type=world needs no weights at all."
)


def is_prior_folder(folder: Union[str, Path]) -> bool:
    """Whether ``folder`` is a prior of splatgen's world (it carries ``prior_card.json``)."""
    return (Path(folder) / "prior_card.json").is_file()


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


def prompt_check(held_out: Sequence[Sequence[str]] = (), name: str = "the bundled prior") -> Callable[[str], Optional[str]]:
    """A prompt check for the prior's text encoder (see ``OpenCLIPPromptEncoder(prompt_check=...)``): prompts
    outside the world's captions get a warning naming the vocabulary; kind/colour pairs held out of the
    prior's training (``held_out``, from the text encoder folder's ``held_out_pairs``) get a note."""
    held = {(str(k), str(c)) for k, c in held_out}

    def check(prompt: str) -> Optional[str]:
        if not is_world_prompt(prompt):
            return (f"{name} was trained only on the procedural world's captions, and {short(prompt)} is not one: "
                    f"generation runs, but the result is unlikely to match the prompt. {vocabulary()}")
        obj = parse_prompt(prompt, seed=0)
        colour_given = any(w in COLOURS or w in COLOUR_ALIASES for w in prompt.lower().split())
        if colour_given and (obj.kind, obj.colour) in held:
            return (f"{obj.colour} {obj.kind} is one of the kind/colour pairs held out of {name}'s training "
                    "(to measure generalisation): expect a less faithful result than for the other pairs")
        return None

    return check
