"""Text encoders: prompt -> per-token embeddings for the UNet's cross-attention, used once per run.

- :class:`PromptEncoder`: the interface (``encode``, ``truncation``, ``release``);
- :class:`HFPromptEncoder`: a transformers tokenizer + text model (Stable Diffusion's CLIP; T5-style encoders);
- :class:`OpenCLIPPromptEncoder`: the text tower of an open_clip CLIP stored as a folder (the bundled prior's).

:data:`PROMPT_ENCODER_LOADERS` maps the subfolder that identifies a backend in a model folder to its loader:
a plain dict, filled here, that nothing modifies at import time. An encoder knows nothing about what its
model was trained on: a caller that knows (the bundled prior's wiring) hands it a ``prompt_check``.

Folder format of an open_clip CLIP (what ``open_clip.create_model("local-dir:<folder>")`` loads, offline)::

    open_clip_config.json           {"model_cfg": {...}, "preprocess_cfg": {...}, "splatgen": {...}}
    open_clip_model.safetensors     the state dict (fp16)
    bpe_simple_vocab_world.txt.gz   the tokenizer's merges: SimpleTokenizer(bpe_path=..., context_length=...)

``splatgen`` holds facts about the model as data: ``context_length``, ``bpe_file``, ``held_out_pairs`` and
``text_aliases`` (words rewritten before tokenizing, e.g. "gray" -> "grey", because the model was trained on
one spelling). Images go into the vision tower as [B, 3, S, S] in [-1, 1].
"""

from __future__ import annotations

import json
import re
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..cameras import DIRECTIONS
from ..errors import ModelLoadError
from .loading import SD_LAYOUT, load_component, transformers_dtype_kwarg

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
BPE_NAME = "bpe_simple_vocab_world.txt.gz"
#: subfolder of a model folder holding the open_clip CLIP whose text tower conditions the UNet.
TEXT_ENCODER_FOLDER = "text_encoder_openclip"
#: subfolder of the bundled prior holding the evaluator CLIP (R-precision; see splatgen.world.clip_eval).
EVALUATOR_FOLDER = "evaluator_clip"

#: a prompt check: the prompt (without its view suffix) -> a warning for the user, or None.
PromptCheck = Callable[[str], Optional[str]]


class PromptEncoder(ABC):
    """Text -> per-token embeddings for the UNet's cross-attention. Used once per run, then released."""

    #: tokens the encoder takes, start/end tokens included.
    max_length: int

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> Tensor:
        """N texts -> [N, L, D] embeddings (L = ``max_length`` for padded encoders)."""

    @abstractmethod
    def truncation(self, text: str) -> Optional[Tuple[int, str]]:
        """None when ``text`` fits, else (number of tokens cut, the text the encoder actually sees)."""

    def release(self) -> None:
        """Drop the weights (the embeddings computed so far stay valid)."""


class HFPromptEncoder(PromptEncoder):
    """A transformers tokenizer + text model (CLIPTextModel for SD; T5-style encoders also work).

    The embedding is the model's first output, ``last_hidden_state`` [N, L, D]: what the diffusers pipelines
    feed to the UNet (for SD 2.x the converted OpenCLIP text tower already ends at the penultimate layer).
    """

    def __init__(self, tokenizer: Any, model: Optional[torch.nn.Module], device: torch.device, use_attention_mask: bool = False) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        # SD's CLIP was trained without an attention mask (padding tokens attend); T5 encoders use one.
        self.use_attention_mask = use_attention_mask
        self.max_length = int(tokenizer.model_max_length)

    @classmethod
    def from_pretrained(
        cls,
        source: Union[Path, str],
        device: torch.device,
        dtype: torch.dtype,
        layout: Sequence[str] = SD_LAYOUT,
        tokenizer_cls: Any = None,
        model_cls: Any = None,
    ) -> "HFPromptEncoder":
        """Load ``tokenizer/`` and ``text_encoder/``; the classes default to what the configs name."""
        import transformers

        if tokenizer_cls is None:
            tokenizer_cls = transformers.AutoTokenizer
        tokenizer = load_component("tokenizer", source, layout, lambda: tokenizer_cls.from_pretrained(source, subfolder="tokenizer"))
        if model_cls is None:
            config = load_component(
                "text encoder config", source, layout, lambda: transformers.AutoConfig.from_pretrained(source, subfolder="text_encoder")
            )
            arch = (getattr(config, "architectures", None) or ["CLIPTextModel"])[0]
            model_cls = getattr(transformers, arch, None)
            if model_cls is None:
                raise ModelLoadError(f"text_encoder/ of {str(source)!r} names an unknown architecture {arch!r}")
        kw = {transformers_dtype_kwarg(): dtype}
        model = load_component("text encoder", source, layout, lambda: model_cls.from_pretrained(source, subfolder="text_encoder", **kw))
        model.requires_grad_(False).eval().to(device)
        use_mask = "t5" in str(getattr(model.config, "model_type", "")).lower()
        return cls(tokenizer, model, device, use_attention_mask=use_mask)

    def encode(self, texts: Sequence[str]) -> Tensor:
        if self.model is None:
            raise RuntimeError("the text encoder was released; embeddings can only be computed before that")
        tok = self.tokenizer(
            list(texts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        ids = tok.input_ids.to(self.device)
        mask = tok.attention_mask.to(self.device) if self.use_attention_mask else None
        with torch.no_grad():
            return self.model(ids, attention_mask=mask)[0]

    def truncation(self, text: str) -> Optional[Tuple[int, str]]:
        # verbose=False: transformers would log its own "sequence is too long" warning; we give a better one.
        ids = self.tokenizer(text, truncation=False, verbose=False).input_ids
        if len(ids) <= self.max_length:
            return None
        kept = self.tokenizer(text, truncation=True, max_length=self.max_length).input_ids
        return len(ids) - self.max_length, self.tokenizer.decode(kept, skip_special_tokens=True).strip()

    def release(self) -> None:
        self.model = None


# ------------------------------------------------------------------------------------------------ open_clip folders
def import_open_clip():
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - open_clip is a dependency
        raise ModelLoadError(
            f"open_clip text encoders need the package open_clip_torch ({exc}); install it: pip install open_clip_torch"
        ) from exc
    return open_clip


def clip_tokenizer(bpe_path: Union[str, Path], context_length: int):
    """open_clip's SimpleTokenizer on a merges file (the folder's own, a subset of open_clip's vocabulary)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(bpe_path=str(bpe_path), context_length=int(context_length))


def text_token_features(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Per-token features [N, L, width] of open_clip CLIP's text tower: ``encode_text`` up to its final
    LayerNorm, before pooling and projection (what the UNet cross-attends to)."""
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding.to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)
    return model.ln_final(x)


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
    open_clip = import_open_clip()
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
        meta = dict(config.get("splatgen", {}))
        context_length = int(config["model_cfg"]["text_cfg"]["context_length"])
        tokenizer = clip_tokenizer(folder / meta.get("bpe_file", BPE_NAME), context_length)
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


_VIEW_SUFFIX = re.compile(r"\s*,?\s*(?:" + "|".join(DIRECTIONS) + r")\s+view\s*$", re.IGNORECASE)


def strip_view_suffix(text: str) -> str:
    """``"a red mug, front view"`` -> ``"a red mug"`` (the suffix view-dependent prompting appends)."""
    return _VIEW_SUFFIX.sub("", text.strip())


class OpenCLIPPromptEncoder(PromptEncoder):
    """The text tower of an open_clip CLIP as the UNet's prompt encoder.

    ``encode`` returns the per-token features [N, L, D] after the final LayerNorm (:func:`text_token_features`),
    with L the context length (prompts are padded with zeros, as open_clip's tokenizer does) in float32.
    The empty prompt "" gives the unconditional embedding the UNet was trained with (caption dropout).

    Args:
        text_aliases: words rewritten before tokenizing (whole words, any case), e.g. ``{"gray": "grey"}``.
        prompt_check: called once per distinct prompt (view suffix stripped); a returned message is warned
            once. The encoder itself has no notion of what its model knows.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        device: Union[str, torch.device] = "cpu",
        *,
        text_aliases: Optional[Mapping[str, str]] = None,
        prompt_check: Optional[PromptCheck] = None,
        meta: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.device = torch.device(device)
        self.model: Optional[torch.nn.Module] = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = int(tokenizer.context_length)
        self.text_aliases = {str(k).lower(): str(v) for k, v in (text_aliases or {}).items()}
        self._alias_re = (re.compile(r"\b(" + "|".join(map(re.escape, self.text_aliases)) + r")\b", re.IGNORECASE)
                          if self.text_aliases else None)
        self.prompt_check = prompt_check
        #: the folder's ``splatgen`` facts (``held_out_pairs``, ...) when loaded from a folder.
        self.meta: Dict[str, Any] = dict(meta or {})
        self._checked: set = set()

    @classmethod
    def from_folder(cls, folder: Union[str, Path], device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None,
                    prompt_check: Optional[PromptCheck] = None) -> "OpenCLIPPromptEncoder":
        """Load a CLIP folder (``dtype`` is accepted for the loader protocol; the tower runs in float32, it is tiny)."""
        model, tokenizer, meta = load_clip_folder(folder, device)
        return cls(model, tokenizer, device, text_aliases=meta.get("text_aliases"), prompt_check=prompt_check, meta=meta)

    def canonical_text(self, text: str) -> str:
        """``text`` with the folder's aliases applied ("a gray mug" -> "a grey mug")."""
        if self._alias_re is None:
            return text
        return self._alias_re.sub(lambda m: self.text_aliases[m.group(1).lower()], text)

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        return self.tokenizer([self.canonical_text(t) for t in texts]).to(self.device)

    def encode(self, texts: Sequence[str]) -> Tensor:
        if self.model is None:
            raise RuntimeError("the text encoder was released; embeddings can only be computed before that")
        for msg in self.prompt_warnings(texts):
            warnings.warn(msg, UserWarning, stacklevel=3)
        with torch.no_grad():
            return text_token_features(self.model, self.tokenize(texts)).float()

    def prompt_warnings(self, texts: Sequence[str]) -> List[str]:
        """What ``prompt_check`` says of ``texts`` (each distinct prompt checked once per encoder)."""
        if self.prompt_check is None:
            return []
        out = []
        for text in texts:
            base = strip_view_suffix(text)
            if not base or base in self._checked:
                continue
            self._checked.add(base)
            msg = self.prompt_check(base)
            if msg:
                out.append(msg)
        return out

    def truncation(self, text: str) -> Optional[Tuple[int, str]]:
        ids = self.tokenizer.encode(self.canonical_text(text))
        n = len(ids) + 2  # start and end tokens
        if n <= self.max_length:
            return None
        kept = ids[: self.max_length - 2]
        return n - self.max_length, self.tokenizer.decode(kept).strip()

    def release(self) -> None:
        self.model = None


# ------------------------------------------------------------------------------------------------ loaders
def _load_hf_prompt_encoder(source: Union[Path, str], device: torch.device, dtype: torch.dtype, layout: Sequence[str]) -> PromptEncoder:
    return HFPromptEncoder.from_pretrained(source, device, dtype, layout=tuple(layout) + ("text_encoder", "tokenizer"))


def _load_openclip_prompt_encoder(source: Union[Path, str], device: torch.device, dtype: torch.dtype, layout: Sequence[str]) -> PromptEncoder:
    if not isinstance(source, Path):
        raise ModelLoadError(f"{source!r}: an open_clip text encoder ({TEXT_ENCODER_FOLDER}/) is only loaded from a local folder")
    return OpenCLIPPromptEncoder.from_folder(source / TEXT_ENCODER_FOLDER, device, dtype)


#: Text-encoder backends of a pixel-space model folder, keyed by the subfolder that identifies them; the first
#: whose folder exists is used: a transformers CLIP (``text_encoder/`` + ``tokenizer/``) or an open_clip text
#: tower (``text_encoder_openclip/``, the bundled prior's).
PROMPT_ENCODER_LOADERS: Dict[str, Callable[[Union[Path, str], torch.device, torch.dtype, Sequence[str]], PromptEncoder]] = {
    "text_encoder": _load_hf_prompt_encoder,
    TEXT_ENCODER_FOLDER: _load_openclip_prompt_encoder,
}
