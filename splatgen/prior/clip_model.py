"""The prior's CLIP models: open_clip's ``CLIP`` class in a small custom configuration, its folder format,
and :class:`OpenCLIPPromptEncoder`, the text tower as a :class:`~splatgen.guidance.PromptEncoder`.

Tokenizer. open_clip's :class:`~open_clip.tokenizer.SimpleTokenizer` with a *subset* of the BPE merges it
ships (``bpe_simple_vocab_16e6.txt.gz`` inside the open_clip package; nothing is downloaded): the merges
that byte-pair encoding applies to the words of the world's captions (:data:`WORLD_WORDS`), kept in their
original order, so those words tokenize exactly as with the full vocabulary (one token each) while the
vocabulary has ~600 entries instead of 49,408 (a 49,408 x 192 embedding table alone would be 19 MB in
fp16). Other words still tokenize, into their letters. The merges file travels inside every CLIP folder.

Folder format (what ``open_clip.create_model("local-dir:<folder>")`` loads, offline)::

    open_clip_config.json           {"model_cfg": {...}, "preprocess_cfg": {...}, "splatgen": {...}}
    open_clip_model.safetensors     the state dict (fp16)
    bpe_simple_vocab_world.txt.gz   the tokenizer's merges: SimpleTokenizer(bpe_path=..., context_length=...)

Images go into the vision tower as [B, 3, 64, 64] in [-1, 1] (``preprocess_cfg`` mean = std = 0.5 says so
to open_clip's transforms).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..cameras import DIRECTIONS
from ..errors import ModelLoadError
from ..guidance.diffusers_guidance import PROMPT_ENCODER_LOADERS, PromptEncoder
from ..world.grammar import COLOUR_ALIASES, COLOURS, KINDS, is_world_prompt, parse_prompt, vocabulary

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
BPE_NAME = "bpe_simple_vocab_world.txt.gz"
#: subfolder of a prior holding the CLIP whose text tower conditions the UNet.
TEXT_ENCODER_FOLDER = "text_encoder_openclip"
#: subfolder of a prior holding the evaluator CLIP.
EVALUATOR_FOLDER = "evaluator_clip"

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


def _open_clip():
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - open_clip is a dependency
        raise ModelLoadError(
            f"the prior's CLIP models need the package open_clip_torch ({exc}); install it: pip install open_clip_torch"
        ) from exc
    return open_clip


# ------------------------------------------------------------------------------------------------ tokenizer
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


def world_tokenizer(bpe_path: Union[str, Path], context_length: int):
    """open_clip's SimpleTokenizer on the world's merges file."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(bpe_path=str(bpe_path), context_length=int(context_length))


def model_config(base: Dict[str, Any], vocab_size: int) -> Dict[str, Any]:
    """A full ``model_cfg`` (open_clip's CLIP keyword arguments) with the tokenizer's vocabulary size."""
    cfg = json.loads(json.dumps(base))
    cfg["text_cfg"]["vocab_size"] = int(vocab_size)
    return cfg


def build_clip(cfg: Dict[str, Any]) -> torch.nn.Module:
    """open_clip's ``CLIP`` from a ``model_cfg`` (random weights), as ``create_model`` builds it."""
    open_clip = _open_clip()
    return open_clip.CLIP(**json.loads(json.dumps(cfg)))


# ------------------------------------------------------------------------------------------------ features
def text_token_features(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Per-token features [N, L, width] of open_clip CLIP's text tower: ``encode_text`` up to its final
    LayerNorm, before pooling and projection (what the UNet cross-attends to)."""
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding.to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)
    return model.ln_final(x)


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
        "text_features": "per-token ln_final output [N, context_length, text width] (splatgen.prior.clip_model.text_token_features)",
    }
    meta.update(info or {})
    config = {"model_cfg": cfg, "preprocess_cfg": PREPROCESS_CFG, "splatgen": meta}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _clip_load_errors() -> Tuple[type, ...]:
    errs: List[type] = [OSError, ValueError, RuntimeError, KeyError, TypeError, EOFError]
    try:
        from safetensors import SafetensorError

        errs.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def load_clip_folder(folder: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Tuple[torch.nn.Module, Any, Dict[str, Any]]:
    """(model in float32 eval mode, tokenizer, the config's ``splatgen`` section) of a CLIP folder.

    Raises:
        ModelLoadError: the folder or one of its files is missing or unreadable (the message names it).
    """
    folder = Path(folder)
    what = f"the CLIP folder {str(folder)!r}"
    if not folder.is_dir():
        raise ModelLoadError(f"{what} does not exist; it must hold {CONFIG_NAME}, {WEIGHTS_NAME} and {BPE_NAME}")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME, BPE_NAME) if not (folder / n).is_file()]
    if missing:
        present = sorted(p.name for p in folder.iterdir())
        raise ModelLoadError(f"{what} lacks {missing} (it holds {present or 'nothing'}); it must hold {CONFIG_NAME}, {WEIGHTS_NAME} and {BPE_NAME}")
    open_clip = _open_clip()
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
        meta = dict(config.get("splatgen", {}))
        context_length = int(config["model_cfg"]["text_cfg"]["context_length"])
        tokenizer = world_tokenizer(folder / meta.get("bpe_file", BPE_NAME), context_length)
        model = open_clip.create_model("local-dir:" + str(folder.resolve()), precision="fp32", device=device)
    except _clip_load_errors() as exc:
        raise ModelLoadError(f"could not load {what}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    if tokenizer.vocab_size != int(config["model_cfg"]["text_cfg"].get("vocab_size", -1)):
        raise ModelLoadError(
            f"{what}: the tokenizer's vocabulary ({tokenizer.vocab_size}) does not match the model's "
            f"({config['model_cfg']['text_cfg'].get('vocab_size')}); {BPE_NAME} belongs to another model"
        )
    model.eval().requires_grad_(False)
    return model, tokenizer, meta


# ------------------------------------------------------------------------------------------------ encoder
_ALIAS_RE = re.compile(r"\b(" + "|".join(map(re.escape, COLOUR_ALIASES)) + r")\b", re.IGNORECASE)


def canonical_text(text: str) -> str:
    """Colour aliases spelled the world's way ("a gray mug" -> "a grey mug"): the prior knows the canonical words."""
    return _ALIAS_RE.sub(lambda m: COLOUR_ALIASES[m.group(1).lower()], text)


class OpenCLIPPromptEncoder(PromptEncoder):
    """The text tower of an open_clip CLIP as the UNet's prompt encoder.

    ``encode`` returns the per-token features [N, L, D] after the final LayerNorm (:func:`text_token_features`),
    with L the context length (prompts are padded with zeros, as open_clip's tokenizer does) in float32.
    The empty prompt "" gives the unconditional embedding the UNet was trained with (caption dropout).

    Prompts outside the vocabulary the prior was trained on are still encoded but warned about once (the
    world's vocabulary is named); held-out kind/colour pairs get a note. ``vocabulary_check=False`` turns that off.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        device: Union[str, torch.device] = "cpu",
        *,
        held_out: Sequence[Sequence[str]] = (),
        vocabulary_check: bool = True,
        name: str = "the bundled prior",
    ) -> None:
        self.device = torch.device(device)
        self.model: Optional[torch.nn.Module] = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = int(tokenizer.context_length)
        self.held_out = {(str(k), str(c)) for k, c in held_out}
        self.vocabulary_check = vocabulary_check
        self.name = name
        self._warned: set = set()

    @classmethod
    def from_folder(cls, folder: Union[str, Path], device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None, **kwargs) -> "OpenCLIPPromptEncoder":
        """Load a CLIP folder (``dtype`` is accepted for the loader protocol; the tower runs in float32, it is tiny)."""
        model, tokenizer, meta = load_clip_folder(folder, device)
        return cls(model, tokenizer, device, held_out=meta.get("held_out_pairs", ()), **kwargs)

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        return self.tokenizer([canonical_text(t) for t in texts]).to(self.device)

    def encode(self, texts: Sequence[str]) -> Tensor:
        if self.model is None:
            raise RuntimeError("the text encoder was released; embeddings can only be computed before that")
        if self.vocabulary_check:
            for msg in self.vocabulary_warnings(texts):
                warnings.warn(msg, UserWarning, stacklevel=3)
        with torch.no_grad():
            return text_token_features(self.model, self.tokenize(texts)).float()

    def vocabulary_warnings(self, texts: Sequence[str]) -> List[str]:
        """Messages for texts outside what the prior was trained on (each said once per encoder)."""
        out = []
        for text in texts:
            if not text.strip():
                continue
            base = _VIEW_SUFFIX.sub("", text.strip())
            if base in self._warned:
                continue
            if not is_world_prompt(text):
                self._warned.add(base)
                out.append(
                    f"{self.name} was trained only on the procedural world's captions, and {base!r} is not one: "
                    f"generation runs, but the result is unlikely to match the prompt. {vocabulary()}"
                )
                continue
            obj = parse_prompt(text, seed=0)
            colour_given = any(w in COLOURS or w in COLOUR_ALIASES for w in base.lower().split())
            if colour_given and (obj.kind, obj.colour) in self.held_out:
                self._warned.add(base)
                out.append(
                    f"{obj.colour} {obj.kind} is one of the kind/colour pairs held out of {self.name}'s training "
                    "(to measure generalisation): expect a less faithful result than for the other pairs"
                )
        return out

    def truncation(self, text: str) -> Optional[Tuple[int, str]]:
        ids = self.tokenizer.encode(canonical_text(text))
        n = len(ids) + 2  # start and end tokens
        if n <= self.max_length:
            return None
        kept = ids[: self.max_length - 2]
        return n - self.max_length, self.tokenizer.decode(kept).strip()

    def release(self) -> None:
        self.model = None


_VIEW_SUFFIX = re.compile(r"\s*,?\s*(?:" + "|".join(DIRECTIONS) + r")\s+view\s*$", re.IGNORECASE)


def load_openclip_prompt_encoder(source: Union[Path, str], device: torch.device, dtype: torch.dtype, layout: Sequence[str]) -> PromptEncoder:
    """``PROMPT_ENCODER_LOADERS`` entry for a model folder with ``text_encoder_openclip/``."""
    if not isinstance(source, Path):
        raise ModelLoadError(f"{source!r}: an open_clip text encoder ({TEXT_ENCODER_FOLDER}/) is only loaded from a local folder")
    return OpenCLIPPromptEncoder.from_folder(source / TEXT_ENCODER_FOLDER, device, dtype)


def register() -> None:
    """Make :class:`~splatgen.guidance.PixelGuidance` load folders with ``text_encoder_openclip/``."""
    PROMPT_ENCODER_LOADERS.setdefault(TEXT_ENCODER_FOLDER, load_openclip_prompt_encoder)


register()
