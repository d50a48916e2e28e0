"""Training side of the prior's CLIP models: open_clip's ``CLIP`` class in a small custom configuration,
the world's tokenizer vocabulary, and writing a CLIP folder (read back by
:func:`splatgen.guidance.text_encoders.load_clip_folder`, whose docstring gives the folder format).

Tokenizer. open_clip's :class:`~open_clip.tokenizer.SimpleTokenizer` with a *subset* of the BPE merges it
ships (``bpe_simple_vocab_16e6.txt.gz`` inside the open_clip package; nothing is downloaded): the merges
that byte-pair encoding applies to the words of the world's captions (:data:`WORLD_WORDS`), kept in their
original order, so those words tokenize exactly as with the full vocabulary (one token each) while the
vocabulary has ~600 entries instead of 49,408 (a 49,408 x 192 embedding table alone would be 19 MB in
fp16). Other words still tokenize, into their letters. The merges file travels inside every CLIP folder.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch

from splatgen.cameras import DIRECTIONS
from splatgen.guidance.text_encoders import (  # noqa: F401  (re-exported for the training code)
    BPE_NAME,
    CONFIG_NAME,
    EVALUATOR_FOLDER,
    TEXT_ENCODER_FOLDER,
    WEIGHTS_NAME,
    OpenCLIPPromptEncoder,
    clip_tokenizer,
    import_open_clip,
    load_clip_folder,
    text_token_features,
)
from splatgen.world.grammar import COLOUR_ALIASES, COLOURS, KINDS

#: open_clip's SimpleTokenizer on a merges file (the name the training code uses).
world_tokenizer = clip_tokenizer

#: every word of the world's prompts (articles, colours and their aliases, kinds, view directions).
WORLD_WORDS: Tuple[str, ...] = tuple(
    ["a", "an", "the"] + list(COLOURS) + list(COLOUR_ALIASES) + list(KINDS) + list(DIRECTIONS) + ["view", ","]
)

#: the text tower's width is the UNet's cross-attention dimension.
CLIP_CONFIG: Dict[str, Any] = {
    "embed_dim": 192,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 192, "layers": 4, "head_width": 64, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 32, "width": 192, "heads": 3, "layers": 4, "mlp_ratio": 4.0},
}
#: the test path's CLIP (a few thousand parameters, 32x32 images).
TINY_CLIP_CONFIG: Dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
}
PREPROCESS_CFG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "resize_mode": "squash"}


@functools.lru_cache(maxsize=1)
def _bundled_bpe_ranks() -> Dict[Tuple[str, ...], int]:
    from open_clip.tokenizer import default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]  # what SimpleTokenizer reads
    return {m: i for i, m in enumerate(merges)}


def world_bpe_merges(words: Iterable[str] = WORLD_WORDS) -> List[Tuple[str, str]]:
    """The merges of open_clip's bundled BPE vocabulary that encoding ``words`` applies, in rank order."""
    from open_clip.tokenizer import bytes_to_unicode

    ranks = _bundled_bpe_ranks()
    enc = bytes_to_unicode()
    used = set()
    for w in words:
        token = "".join(enc[b] for b in w.encode("utf-8"))
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            used.add(best)
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
    return sorted(used, key=ranks.__getitem__)


def write_world_bpe(path: Union[str, Path], words: Iterable[str] = WORLD_WORDS) -> Path:
    """Write the merges file of the world's tokenizer (gzip, SimpleTokenizer's format: a header line, then
    one merge per line). Its content depends only on ``words`` and open_clip's bundled vocabulary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "#version: 0.2 (subset of open_clip's bpe_simple_vocab_16e6 for splatgen's world)\n"
    text += "\n".join(" ".join(m) for m in world_bpe_merges(words))
    # no name, mtime=0: the same bytes on every machine
    with open(path, "wb") as f, gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    return path


def model_config(base: Dict[str, Any], vocab_size: int) -> Dict[str, Any]:
    """A full ``model_cfg`` (open_clip's CLIP keyword arguments) with the tokenizer's vocabulary size."""
    cfg = json.loads(json.dumps(base))
    cfg["text_cfg"]["vocab_size"] = int(vocab_size)
    return cfg


def build_clip(cfg: Dict[str, Any]) -> torch.nn.Module:
    """open_clip's ``CLIP`` from a ``model_cfg`` (random weights), as ``create_model`` builds it."""
    open_clip = import_open_clip()
    return open_clip.CLIP(**json.loads(json.dumps(cfg)))


# ------------------------------------------------------------------------------------------------ folders
def save_clip_folder(
    model: torch.nn.Module,
    folder: Union[str, Path],
    cfg: Dict[str, Any],
    bpe_path: Union[str, Path],
    info: Optional[Dict[str, Any]] = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write ``model`` in the folder format of the module doc (weights cast to ``dtype``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    bpe_bytes = Path(bpe_path).read_bytes()
    (folder / BPE_NAME).write_bytes(bpe_bytes)
    meta = {
        "tokenizer": "open_clip.tokenizer.SimpleTokenizer",
        "bpe_file": BPE_NAME,
        "context_length": int(cfg["text_cfg"]["context_length"]),
        "images": "[B, 3, S, S] in [-1, 1], white background",
        "text_features": "per-token ln_final output [N, context_length, text width] (splatgen.guidance.text_encoders.text_token_features)",
        "text_aliases": dict(COLOUR_ALIASES),
    }
    meta.update(info or {})
    config = {"model_cfg": cfg, "preprocess_cfg": PREPROCESS_CFG, "splatgen": meta}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder
