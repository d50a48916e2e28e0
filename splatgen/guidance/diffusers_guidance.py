"""Guidance from diffusion models in diffusers format: Stable Diffusion 1.x/2.x (latent) and pixel-space UNets.

Both classes share one scheme (see :class:`_UNetGuidance`):

- a ``UNet2DConditionModel`` and the training noise schedule (a ``DDPMScheduler`` built from the model's
  ``scheduler/`` config, so ``alphas_cumprod`` is exactly the schedule the model was trained with);
- text embeddings computed ONCE by :meth:`prepare_text` for the plain prompt, each view direction and the
  negative prompt, after which the text encoder is freed (it is only needed at the start of a run);
- :meth:`predict_noise` runs one batched UNet call on ``[uncond x B, cond x B]`` and always returns an
  epsilon prediction in float32, whatever the model's ``prediction_type`` is.

Every size is read from the models' configs (latent channels, VAE scaling factor and downsampling factor,
UNet sample size): nothing assumes Stable Diffusion's 4 channels, 0.18215 or a factor of 8.

Text encoding is pluggable through :class:`PromptEncoder`: the transformers-based :class:`HFPromptEncoder`
covers CLIP (and T5-style encoders); another backend (e.g. an open_clip text tower) subclasses
``PromptEncoder`` and is either passed to :class:`PixelGuidance` directly or registered by folder name in
:data:`PROMPT_ENCODER_LOADERS`.
"""

from __future__ import annotations

import logging
import os
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import DIRECTIONS
from ..errors import ModelLoadError, PromptError
from .base import Guidance, directional_prompt

T = TypeVar("T")
log = logging.getLogger("splatgen")

#: Subfolders (diffusers layout) a Stable Diffusion model folder must have.
SD_LAYOUT = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: Subfolders a pixel-space model folder must have (plus a text encoder, see ``PROMPT_ENCODER_LOADERS``).
PIXEL_LAYOUT = ("unet",)
#: The Stable Diffusion model the framework is tuned for (used in error messages).
DEFAULT_SD_ID = "stabilityai/stable-diffusion-2-1-base"
#: Prediction types the schedulers of diffusers use; all are converted to epsilon.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


# --------------------------------------------------------------------------------------------------------------
# Loading helpers: every failure becomes one ModelLoadError that says what was tried and how to fix it.
# --------------------------------------------------------------------------------------------------------------


def _load_errors() -> Tuple[type, ...]:
    """Exception types that mean "these weights could not be loaded" (not a bug in splatgen).

    OSError covers missing files, ``EnvironmentError`` and the hub's HTTP/offline errors (they subclass it);
    ValueError covers diffusers' and the hub's validation errors (e.g. a path that is not a valid repo id);
    KeyError/TypeError/RuntimeError come from configs or state dicts of the wrong architecture.
    """
    errs: List[type] = [OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError]
    try:  # EntryNotFoundError does not subclass OSError in huggingface_hub >= 1.0
        from huggingface_hub.errors import EntryNotFoundError

        errs.append(EntryNotFoundError)
    except ImportError:  # pragma: no cover - very old huggingface_hub
        pass
    try:  # network failures raised by the hub client's HTTP library
        import httpx

        errs.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``TypeName: first non-empty line of the message`` (shortened), for error messages."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0].rstrip(".") if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _layout_help(layout: Sequence[str], extra: str = "") -> str:
    folders = ", ".join(f"{name}/" for name in layout)
    return (
        f"Expected a diffusers-format model: a folder (or hub id) with the subfolders {folders}{extra}, each "
        "holding its config.json (scheduler/: scheduler_config.json) and weights. This machine may have no "
        "network access, so download the weights beforehand, e.g. "
        f"`huggingface-cli download {DEFAULT_SD_ID} --local-dir ./models/sd21-base`, and pass the folder "
        "(guidance.model=./models/sd21-base)."
    )


def _looks_like_path(model: str) -> bool:
    """True when ``model`` is meant as a local folder rather than a hub id ``org/name``."""
    if model.startswith((".", "/", "~")) or "\\" in model or os.path.isabs(model):
        return True
    # Diffusion models on the hub are always "org/name"; a bare name is a (mistyped) folder.
    return model.count("/") != 1


def resolve_model_source(model: str, layout: Sequence[str], extra_help: str = "") -> Union[Path, str]:
    """A local folder (checked for the expected subfolders) or a hub id, else a :class:`ModelLoadError`.

    Local folders are checked up front so that a typo is reported as "folder not found" instead of as a
    confusing hub error, and a missing subfolder is named together with what the folder does contain.
    """
    if not model or not model.strip():
        raise ModelLoadError("guidance.model is empty. " + _layout_help(layout, extra_help))
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {model!r} is a file, not a folder. " + _layout_help(layout, extra_help))
        missing = [name for name in layout if not (path / name).is_dir()]
        if missing:
            present = sorted(p.name + "/" for p in path.iterdir() if p.is_dir())
            raise ModelLoadError(
                f"model folder {str(path)!r} lacks the subfolder(s) {[m + '/' for m in missing]} "
                f"(it holds {present or 'no subfolders'}). " + _layout_help(layout, extra_help)
            )
        return path
    if _looks_like_path(model):
        raise ModelLoadError(
            f"model folder {model!r} ({str(path.absolute())}) does not exist. " + _layout_help(layout, extra_help)
        )
    return model  # a hub id: only from_pretrained can tell whether it is reachable


def _load(what: str, source: Union[Path, str], layout: Sequence[str], loader: Callable[[], T]) -> T:
    """Run one ``from_pretrained`` call, turning loading failures into a :class:`ModelLoadError`."""
    try:
        return loader()
    except ModelLoadError:
        raise
    except _load_errors() as exc:
        kind = "folder" if isinstance(source, Path) else "hub id (no local folder has that name)"
        raise ModelLoadError(
            f"could not load the {what} from the {kind} {str(source)!r}: {_one_line(exc)}. " + _layout_help(layout)
        ) from exc


def _transformers_dtype_kwarg() -> str:
    """transformers >= 4.56 takes ``dtype=`` (``torch_dtype=`` is deprecated in 5.x and warns)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_ddpm_scheduler(source: Union[Path, str], layout: Sequence[str]) -> Any:
    """The model's training noise schedule as a ``DDPMScheduler``.

    ``DDPMScheduler.from_pretrained`` accepts the config of any of diffusers' schedulers (SD 2.1-base ships a
    ``PNDMScheduler`` config): the betas, ``num_train_timesteps`` and ``prediction_type`` are what matters and
    are shared. If the model has no ``scheduler/`` at all, fall back to Stable Diffusion's schedule
    (scaled_linear 0.00085 -> 0.012, 1000 steps, epsilon) with a warning, since a guess is then unavoidable.
    """
    from diffusers import DDPMScheduler

    has_scheduler = (source / "scheduler").is_dir() if isinstance(source, Path) else True
    if not has_scheduler:
        warnings.warn(
            f"{str(source)!r} has no scheduler/ subfolder; assuming Stable Diffusion's training schedule "
            "(scaled_linear betas 0.00085 -> 0.012, 1000 steps, epsilon prediction)",
            UserWarning,
            stacklevel=3,
        )
        return DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
        )
    return _load("noise scheduler", source, layout, lambda: DDPMScheduler.from_pretrained(source, subfolder="scheduler"))


# --------------------------------------------------------------------------------------------------------------
# Text encoding
# --------------------------------------------------------------------------------------------------------------


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
        tokenizer = _load("tokenizer", source, layout, lambda: tokenizer_cls.from_pretrained(source, subfolder="tokenizer"))
        if model_cls is None:
            config = _load(
                "text encoder config", source, layout, lambda: transformers.AutoConfig.from_pretrained(source, subfolder="text_encoder")
            )
            arch = (getattr(config, "architectures", None) or ["CLIPTextModel"])[0]
            model_cls = getattr(transformers, arch, None)
            if model_cls is None:
                raise ModelLoadError(f"text_encoder/ of {str(source)!r} names an unknown architecture {arch!r}")
        kw = {_transformers_dtype_kwarg(): dtype}
        model = _load("text encoder", source, layout, lambda: model_cls.from_pretrained(source, subfolder="text_encoder", **kw))
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


def _load_hf_prompt_encoder(source: Union[Path, str], device: torch.device, dtype: torch.dtype, layout: Sequence[str]) -> PromptEncoder:
    return HFPromptEncoder.from_pretrained(source, device, dtype, layout=tuple(layout) + ("text_encoder", "tokenizer"))


def _load_openclip_prompt_encoder(
    source: Union[Path, str], device: torch.device, dtype: torch.dtype, layout: Sequence[str]
) -> PromptEncoder:
    # open_clip is imported only for folders that hold such a text tower (the bundled prior does).
    from ..prior.clip_model import load_openclip_prompt_encoder

    return load_openclip_prompt_encoder(source, device, dtype, layout)


#: Text-encoder backends of :class:`PixelGuidance`, keyed by the subfolder that identifies them; the first whose
#: folder exists is used: a transformers CLIP (``text_encoder/`` + ``tokenizer/``) or an open_clip text tower
#: (``text_encoder_openclip/``, the bundled prior's).
PROMPT_ENCODER_LOADERS: Dict[str, Callable[[Union[Path, str], torch.device, torch.dtype, Sequence[str]], PromptEncoder]] = {
    "text_encoder": _load_hf_prompt_encoder,
    "text_encoder_openclip": _load_openclip_prompt_encoder,
}


# --------------------------------------------------------------------------------------------------------------
# Noise prediction
# --------------------------------------------------------------------------------------------------------------


def prediction_to_epsilon(pred: Tensor, x_t: Tensor, t: Tensor, alphas_cumprod: Tensor, prediction_type: str) -> Tensor:
    """Convert a UNet output to an epsilon prediction (float32).

    With x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and v = sqrt(abar) eps - sqrt(1 - abar) x0:

    - ``epsilon``: unchanged;
    - ``v_prediction``: eps = sqrt(abar) v + sqrt(1 - abar) x_t;
    - ``sample`` (x0): eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar).

    Args:
        pred, x_t: [N, C, h, w]; t: [N] integer timesteps; alphas_cumprod: [T].
    """
    pred = pred.float()
    if prediction_type == "epsilon":
        return pred
    abar = alphas_cumprod.to(pred.device, torch.float32)[t.long()].view(-1, *([1] * (pred.dim() - 1)))
    x_t = x_t.float()
    if prediction_type == "v_prediction":
        return abar.sqrt() * pred + (1.0 - abar).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - abar.sqrt() * pred) / (1.0 - abar).sqrt()
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected one of {list(PREDICTION_TYPES)}")


def _resize(images: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize [B, C, H, W] to ``size``; antialiased when shrinking (no aliasing of fine splats)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _side(sample_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """A config ``sample_size`` (int or [h, w]) as (h, w)."""
    if isinstance(sample_size, (list, tuple)):
        return int(sample_size[0]), int(sample_size[1])
    return int(sample_size), int(sample_size)


def _freeze(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Inference-only: no parameter gradients (gradients still flow through to the inputs), eval mode."""
    module.requires_grad_(False).eval().to(device)
    if next(module.parameters()).dtype != dtype:  # cast only when needed: diffusers warns on every .to(dtype)
        module.to(dtype)
    return module


class CudaGraphUNet:
    """Replays a UNet's forward from CUDA graphs, one per input shape.

    SDS calls the same UNet with the same shapes thousands of times, and at the bundled prior's 64x64 (or
    at one view) its forward is bound by kernel launches, not arithmetic: replaying a captured graph removes
    them. Each new (sample, timestep, embedding) shape and dtype is captured once, after two warm-up calls
    on a side stream; inputs are copied into the graph's static buffers and the output is cloned out. Up to
    ``max_graphs`` shapes are kept (resolution milestones add one each); beyond that, or if a capture
    fails, the call runs eagerly (a failure is logged once and disables capture).
    """

    def __init__(self, unet: torch.nn.Module, max_graphs: int = 4):
        self.unet = unet
        self.max_graphs = max_graphs
        self.graphs: Dict[Tuple, Tuple[Any, Tensor, Tensor, Tensor, Tensor]] = {}
        self.failed = False

    def eager(self, x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        return self.unet(x, t, encoder_hidden_states=emb).sample

    def _capture(self, x: Tensor, t: Tensor, emb: Tensor):
        sx, st, se = x.clone(), t.clone(), emb.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.eager(sx, st, se)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.eager(sx, st, se)
        return graph, sx, st, se, out

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        if self.failed or x.device.type != "cuda":
            return self.eager(x, t, emb)
        key = (tuple(x.shape), x.dtype, tuple(t.shape), t.dtype, tuple(emb.shape), emb.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                return self.eager(x, t, emb)
            try:
                entry = self.graphs[key] = self._capture(x, t, emb)
            except Exception as exc:  # capture is an optimisation: never let it break a run
                log.warning("CUDA-graph capture of the UNet failed (%s); running it eagerly", _one_line(exc))
                self.failed = True
                return self.eager(x, t, emb)
        graph, sx, st, se, out = entry
        sx.copy_(x)
        st.copy_(t)
        se.copy_(emb)
        graph.replay()
        return out.clone()


class _UNetGuidance(Guidance):
    """What latent and pixel guidance share: the UNet, the schedule, the text embeddings and the CFG batch."""

    unet: Optional[torch.nn.Module]
    text_encoder: Optional[PromptEncoder]
    prediction_type: str
    model_name: str
    #: warnings emitted by the last :meth:`prepare_text` (e.g. truncation), also sent through ``warnings``.
    prompt_warnings: List[str]

    def _setup_unet(
        self,
        unet: torch.nn.Module,
        scheduler: Any,
        device: Union[torch.device, str],
        dtype: torch.dtype,
        prediction_type: Optional[str],
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.unet = _freeze(unet, self.device, dtype)
        #: replay the UNet from CUDA graphs (on CUDA; set by ``load_guidance`` from ``guidance.cuda_graph``)
        self.cuda_graph = False
        self._graphed: Optional[CudaGraphUNet] = None
        # The schedule in float32 whatever the model dtype: abar near 1 at small t loses digits in fp16.
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = prediction_type or str(getattr(scheduler.config, "prediction_type", "epsilon"))
        if self.prediction_type not in PREDICTION_TYPES:
            raise ModelLoadError(
                f"scheduler prediction_type {self.prediction_type!r} is not supported; expected one of {list(PREDICTION_TYPES)}"
            )
        self.in_channels = int(unet.config.in_channels)
        self.text_encoder = None
        self.keep_text_encoder = False
        self.view_dependent = True
        self.prompt_warnings = []
        self._cond: Dict[Optional[str], Tensor] = {}
        self._uncond: Optional[Tensor] = None

    # ---- text ------------------------------------------------------------------------------------------------

    def prepare_text(self, prompt: str, negative_prompt: str = "", view_dependent: bool = True) -> None:
        """Embed the prompt for every view direction and the negative prompt, then free the text encoder.

        Raises:
            PromptError: the prompt is empty or whitespace only.
        Warns:
            UserWarning when the prompt (or its view-dependent variants) is longer than the text encoder takes;
            the messages are also kept in ``prompt_warnings``.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"the prompt is empty ({prompt!r}); give a description of the object, e.g. 'a red chair'")
        if self.text_encoder is None:
            raise RuntimeError(
                "prepare_text needs the text encoder, which was already released (or never loaded: models built "
                "with from_modules take text_embeddings instead); pass keep_text_encoder=True to encode twice"
            )
        prompt = prompt.strip()
        keys: List[Optional[str]] = [None] + (list(DIRECTIONS) if view_dependent else [])
        texts = [directional_prompt(prompt, d) for d in keys]
        self.prompt_warnings = self._check_truncation(prompt, texts[1:], negative_prompt)
        for msg in self.prompt_warnings:
            warnings.warn(msg, UserWarning, stacklevel=2)
        # One batched encoder call for all prompts; "" gives the model's unconditional embedding.
        emb = self.text_encoder.encode(texts + [negative_prompt])
        self.set_text_embeddings({k: emb[i : i + 1] for i, k in enumerate(keys)}, emb[-1:], view_dependent)
        if not self.keep_text_encoder:
            self.text_encoder.release()
            self.text_encoder = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _check_truncation(self, prompt: str, directional: Sequence[str], negative_prompt: str) -> List[str]:
        assert self.text_encoder is not None
        out: List[str] = []
        limit = self.text_encoder.max_length
        cut = self.text_encoder.truncation(prompt)
        if cut is not None:
            out.append(
                f"the prompt is {cut[0]} token(s) longer than the text encoder's {limit} (start/end tokens "
                f"included); the cut part is ignored and the model sees only: {cut[1]!r}"
            )
        lost_views = [d for d in directional if self.text_encoder.truncation(d) is not None]
        if lost_views:
            out.append(
                f"{len(lost_views)} view-dependent prompt(s) (e.g. {lost_views[0]!r}) exceed the text encoder's "
                f"{limit} tokens, so their ', <direction> view' suffix is cut and view-dependent prompting has no "
                "effect there; shorten the prompt"
            )
        if negative_prompt:
            cut = self.text_encoder.truncation(negative_prompt)
            if cut is not None:
                out.append(f"the negative prompt is {cut[0]} token(s) too long; the model sees only: {cut[1]!r}")
        return out

    def set_text_embeddings(
        self,
        cond: Union[Tensor, Mapping[Optional[str], Tensor]],
        uncond: Tensor,
        view_dependent: bool = True,
    ) -> None:
        """Install precomputed embeddings (what :meth:`prepare_text` does after encoding; benchmarks use it).

        Args:
            cond: [1, L, D] for every view, or a mapping with key ``None`` (plain prompt) and optionally each of
                ``DIRECTIONS`` -> [1, L, D].
            uncond: [1, L, D] the negative (or empty) prompt.
            view_dependent: use the per-direction embeddings in :meth:`predict_noise` (when present).
        """
        table = {None: cond} if isinstance(cond, Tensor) else dict(cond)
        if None not in table:
            raise ValueError("text embeddings need the plain prompt's embedding under the key None")
        self._cond = {k: v.detach().to(self.device, self.dtype) for k, v in table.items()}
        self._uncond = uncond.detach().to(self.device, self.dtype)
        self.view_dependent = view_dependent

    @property
    def text_ready(self) -> bool:
        """True once embeddings are set (by ``prepare_text``, ``set_text_embeddings`` or ``from_modules``); the
        trainer then skips ``prepare_text``, which models built without a text encoder could not run."""
        return self._uncond is not None

    def _embedding(self, direction: Optional[str]) -> Tensor:
        if self.view_dependent and direction is not None:
            if direction not in DIRECTIONS:
                raise ValueError(f"unknown view direction {direction!r}; expected one of {list(DIRECTIONS)}")
            if direction in self._cond:
                return self._cond[direction]
        return self._cond[None]

    # ---- noise prediction --------------------------------------------------------------------------------------

    def predict_noise(self, x_t: Tensor, t: Tensor, directions: Sequence[Optional[str]]) -> Tensor:
        """One UNet call on the classifier-free-guidance batch.

        Args:
            x_t: [B, C, h, w] noisy model-space inputs (any float dtype).
            t: [B] (or scalar) integer timesteps in [0, num_train_timesteps).
            directions: B view directions (``None``: the plain prompt).

        Returns:
            [2B, C, h, w] float32 epsilon predictions: B for the negative/unconditional prompt, then B for the
            prompt with each view's direction. No gradient.
        """
        if self._uncond is None or self.unet is None:
            raise RuntimeError("call prepare_text (or set_text_embeddings) before predict_noise")
        B = x_t.shape[0]
        if len(directions) != B:
            raise ValueError(f"{len(directions)} directions for a batch of {B}")
        t = t.to(self.device).reshape(-1).expand(B) if t.numel() == 1 else t.to(self.device)
        emb = torch.cat([self._uncond.expand(B, -1, -1)] + [self._embedding(d) for d in directions])
        x_in = torch.cat([x_t, x_t]).detach()
        t_in = torch.cat([t, t])
        with torch.no_grad():
            if self.cuda_graph and self.device.type == "cuda":
                if self._graphed is None or self._graphed.unet is not self.unet:
                    self._graphed = CudaGraphUNet(self.unet)
                out = self._graphed(x_in.to(self.dtype), t_in, emb)
            else:
                out = self.unet(x_in.to(self.dtype), t_in, encoder_hidden_states=emb).sample
        if out.shape[1] == 2 * x_in.shape[1]:
            out = out[:, : x_in.shape[1]]  # learned-variance models (DeepFloyd IF) append the variance channels
        return prediction_to_epsilon(out, x_in, t_in, self.alphas_cumprod, self.prediction_type)

    def release(self) -> None:
        self.unet = None
        self._graphed = None
        if self.text_encoder is not None:
            self.text_encoder.release()
            self.text_encoder = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> Dict[str, object]:
        return {
            "type": type(self).__name__,
            "model": self.model_name,
            "dtype": str(self.dtype).replace("torch.", ""),
            "prediction_type": self.prediction_type,
            "num_train_timesteps": self.num_train_timesteps,
            "input_size": self.input_size,
            "unet_params": sum(p.numel() for p in self.unet.parameters()) if self.unet is not None else 0,
        }


class StableDiffusionGuidance(_UNetGuidance):
    """Latent-space guidance from Stable Diffusion 1.x/2.x (or any UNet + AutoencoderKL + CLIP in diffusers format).

    Args:
        model: hub id (e.g. ``stabilityai/stable-diffusion-2-1-base``) or local folder with ``unet/``, ``vae/``,
            ``text_encoder/``, ``tokenizer/`` and ``scheduler/``.
        device: where the models run.
        dtype: UNet, text encoder (and by default VAE) dtype: float32, float16 or bfloat16.
        latent_sample: ``"mean"`` (default) encodes to the VAE posterior's mean; ``"sample"`` draws from it.
            The mean is deterministic, so the same render always gives the same x0 and the only noise in the
            SDS gradient is the diffusion noise one chose; SD's posterior std is small next to that noise, so
            sampling (what threestudio and stable-dreamfusion do) changes little but reproducibility.
        vae_dtype: dtype of the VAE if different (e.g. float32 for a VAE that overflows in fp16).
        prediction_type: override the scheduler config's ``prediction_type``.
        keep_text_encoder: keep the text encoder after ``prepare_text`` (to encode another prompt later).

    Raises:
        ModelLoadError: the model could not be found or loaded.
    """

    def __init__(
        self,
        model: str,
        device: Union[torch.device, str],
        dtype: torch.dtype = torch.float32,
        *,
        latent_sample: str = "mean",
        vae_dtype: Optional[torch.dtype] = None,
        prediction_type: Optional[str] = None,
        keep_text_encoder: bool = False,
    ) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        source = resolve_model_source(str(model), SD_LAYOUT)
        unet = _load("UNet", source, SD_LAYOUT, lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype))
        vae = _load(
            "VAE", source, SD_LAYOUT, lambda: AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=vae_dtype or dtype)
        )
        scheduler = load_ddpm_scheduler(source, SD_LAYOUT)
        device = torch.device(device)
        text_encoder = HFPromptEncoder.from_pretrained(
            source, device, dtype, layout=SD_LAYOUT, tokenizer_cls=CLIPTokenizer, model_cls=CLIPTextModel
        )
        self._setup(unet, vae, scheduler, device, dtype, latent_sample, vae_dtype, prediction_type, str(model))
        self.text_encoder = text_encoder
        self.keep_text_encoder = keep_text_encoder

    @classmethod
    def from_modules(
        cls,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        *,
        text_embeddings: Union[Tensor, Mapping[Optional[str], Tensor], None] = None,
        uncond_embedding: Optional[Tensor] = None,
        text_encoder: Optional[PromptEncoder] = None,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
        latent_sample: str = "mean",
        vae_dtype: Optional[torch.dtype] = None,
        prediction_type: Optional[str] = None,
        name: str = "in-memory",
    ) -> "StableDiffusionGuidance":
        """Wrap modules built in memory (random-weight benchmarks, tests) without any files.

        Args:
            unet, vae: a ``UNet2DConditionModel`` and an ``AutoencoderKL``; moved to ``device``/``dtype``
                (default: the UNet's own).
            scheduler: any diffusers scheduler with ``alphas_cumprod`` and a config.
            text_embeddings: [1, L, D] or {None | direction: [1, L, D]} (see :meth:`set_text_embeddings`);
                with ``uncond_embedding`` [1, L, D] (default zeros), ready for ``predict_noise`` at once.
            text_encoder: alternatively, a :class:`PromptEncoder` for ``prepare_text``.
        """
        self = cls.__new__(cls)
        p = next(unet.parameters())
        device = torch.device(device) if device is not None else p.device
        dtype = dtype or p.dtype
        self._setup(unet, vae, scheduler, device, dtype, latent_sample, vae_dtype, prediction_type, name)
        self.text_encoder = text_encoder
        if text_embeddings is not None:
            plain = text_embeddings if isinstance(text_embeddings, Tensor) else text_embeddings[None]
            uncond = uncond_embedding if uncond_embedding is not None else torch.zeros_like(plain)
            self.set_text_embeddings(text_embeddings, uncond)
        return self

    def _setup(
        self,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        device: torch.device,
        dtype: torch.dtype,
        latent_sample: str,
        vae_dtype: Optional[torch.dtype],
        prediction_type: Optional[str],
        name: str,
    ) -> None:
        if latent_sample not in ("mean", "sample"):
            raise ValueError(f"latent_sample={latent_sample!r}; expected 'mean' or 'sample'")
        self._setup_unet(unet, scheduler, device, dtype, prediction_type)
        self.model_name = name
        self.latent_sample = latent_sample
        self.vae_dtype = vae_dtype or dtype
        self.vae = _freeze(vae, self.device, self.vae_dtype)
        cfg = vae.config

        self.latent_channels = int(cfg.latent_channels)
        self.scaling_factor = float(cfg.scaling_factor)
        # SD3/Flux VAEs also shift the latents; SD 1.x/2.x have no shift_factor (None).
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)
        # Each encoder block but the last halves the resolution.
        self.vae_factor = 2 ** (len(cfg.block_out_channels) - 1)
        if self.latent_channels != self.in_channels:
            raise ModelLoadError(
                f"{name}: the VAE makes {self.latent_channels}-channel latents but the UNet takes {self.in_channels}"
            )
        h, w = _side(unet.config.sample_size)
        self.native_size = (h * self.vae_factor, w * self.vae_factor)
        self.input_size = self.native_size[0] if h == w else None

    def set_vae_checkpointing(self, enabled: bool) -> None:
        """Recompute the VAE encoder's activations in the backward pass instead of storing them: less peak
        memory at 512 x 512 with several views, for one extra encoder forward per step.

        Each down block and the mid block is wrapped in ``torch.utils.checkpoint`` here rather than through
        diffusers' own switch, which older releases honour only in training mode (the VAE is frozen in eval).
        """
        from torch.utils.checkpoint import checkpoint

        enc = self.vae.encoder
        for block in [*enc.down_blocks, enc.mid_block]:
            wrapped = "_splatgen_forward" in block.__dict__
            if enabled and not wrapped:
                plain = block.forward

                def forward(*args, _plain=plain, **kwargs):
                    if torch.is_grad_enabled():
                        return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
                    return _plain(*args, **kwargs)

                block.__dict__["_splatgen_forward"] = plain
                block.forward = forward
            elif not enabled and wrapped:
                del block.__dict__["_splatgen_forward"]
                del block.forward
        self.vae_checkpointing = bool(enabled)

    def encode(self, images: Tensor) -> Tensor:
        """Renders [B, 3, H, W] in [0, 1] -> latents [B, C, H'/f, W'/f] (float32, differentiable).

        Renders are resized to the model's native size (UNet sample_size x VAE factor, 512 for SD 2.1-base).
        The VAE runs in its dtype; the cast back to float32 happens inside autograd, so the gradient reaching
        ``images`` is float32.
        """
        x = _resize(images.float(), self.native_size) * 2.0 - 1.0
        posterior = self.vae.encode(x.to(self.vae_dtype)).latent_dist
        z = posterior.mean if self.latent_sample == "mean" else posterior.sample()
        return (z.float() - self.shift_factor) * self.scaling_factor

    def decode(self, x0: Tensor) -> Tensor:
        """Latents [B, C, h, w] -> images [B, 3, h*f, w*f] in [0, 1] (no gradient; for previews)."""
        with torch.no_grad():
            z = x0.float() / self.scaling_factor + self.shift_factor
            img = self.vae.decode(z.to(self.vae_dtype)).sample
        return ((img.float() + 1.0) * 0.5).clamp(0, 1)

    def release(self) -> None:
        super().release()
        self.vae = None

    def describe(self) -> Dict[str, object]:
        d = super().describe()
        d.update(
            latent_channels=self.latent_channels,
            vae_factor=self.vae_factor,
            scaling_factor=self.scaling_factor,
            latent_sample=self.latent_sample,
            vae_dtype=str(self.vae_dtype).replace("torch.", ""),
        )
        return d


class PixelGuidance(_UNetGuidance):
    """Pixel-space guidance from a text-conditional ``UNet2DConditionModel`` (an Imagen/DeepFloyd-IF-like base stage).

    Args:
        model: hub id or folder with ``unet/`` (in_channels 3), ``scheduler/`` and a text encoder: by default
            ``text_encoder/`` + ``tokenizer/`` (transformers; the class is read from the config), or another
            backend registered in :data:`PROMPT_ENCODER_LOADERS`.
        device, dtype: as for :class:`StableDiffusionGuidance`.
        text_encoder: a ready :class:`PromptEncoder` (then the folder needs no text encoder).
        prediction_type, keep_text_encoder: as for :class:`StableDiffusionGuidance`.
    """

    def __init__(
        self,
        model: str,
        device: Union[torch.device, str],
        dtype: torch.dtype = torch.float32,
        *,
        text_encoder: Optional[PromptEncoder] = None,
        prediction_type: Optional[str] = None,
        keep_text_encoder: bool = False,
    ) -> None:
        from diffusers import UNet2DConditionModel

        extra = "" if text_encoder is not None else " and a text encoder (" + " or ".join(f"{k}/" for k in PROMPT_ENCODER_LOADERS) + ")"
        source = resolve_model_source(str(model), PIXEL_LAYOUT, extra)
        device = torch.device(device)
        if text_encoder is None:
            text_encoder = self._load_prompt_encoder(source, device, dtype)
        unet = _load("UNet", source, PIXEL_LAYOUT, lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype))
        scheduler = load_ddpm_scheduler(source, PIXEL_LAYOUT)
        self._setup(unet, scheduler, device, dtype, prediction_type, str(model))
        self.text_encoder = text_encoder
        self.keep_text_encoder = keep_text_encoder

    @staticmethod
    def _load_prompt_encoder(source: Union[Path, str], device: torch.device, dtype: torch.dtype) -> PromptEncoder:
        names = list(PROMPT_ENCODER_LOADERS)
        if isinstance(source, Path):
            found = [n for n in names if (source / n).is_dir()]
            if not found:
                raise ModelLoadError(
                    f"model folder {str(source)!r} has no text encoder: expected one of {[n + '/' for n in names]} "
                    "(text_encoder/ goes with tokenizer/). " + _layout_help(PIXEL_LAYOUT)
                )
            name = found[0]
        else:
            name = names[0]  # hub ids: the default (transformers) layout
        return PROMPT_ENCODER_LOADERS[name](source, device, dtype, PIXEL_LAYOUT)

    @classmethod
    def from_modules(
        cls,
        unet: torch.nn.Module,
        scheduler: Any,
        *,
        text_embeddings: Union[Tensor, Mapping[Optional[str], Tensor], None] = None,
        uncond_embedding: Optional[Tensor] = None,
        text_encoder: Optional[PromptEncoder] = None,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
        prediction_type: Optional[str] = None,
        name: str = "in-memory",
    ) -> "PixelGuidance":
        """Wrap an in-memory UNet and scheduler (see :meth:`StableDiffusionGuidance.from_modules`)."""
        self = cls.__new__(cls)
        p = next(unet.parameters())
        self._setup(unet, scheduler, torch.device(device) if device is not None else p.device, dtype or p.dtype, prediction_type, name)
        self.text_encoder = text_encoder
        if text_embeddings is not None:
            plain = text_embeddings if isinstance(text_embeddings, Tensor) else text_embeddings[None]
            self.set_text_embeddings(text_embeddings, uncond_embedding if uncond_embedding is not None else torch.zeros_like(plain))
        return self

    def _setup(
        self, unet: torch.nn.Module, scheduler: Any, device: torch.device, dtype: torch.dtype, prediction_type: Optional[str], name: str
    ) -> None:
        self._setup_unet(unet, scheduler, device, dtype, prediction_type)
        self.model_name = name
        if self.in_channels != 3:
            raise ModelLoadError(f"{name}: a pixel-space UNet must take 3 channels (RGB); this one takes {self.in_channels}")
        self.native_size = _side(unet.config.sample_size)
        self.input_size = self.native_size[0] if self.native_size[0] == self.native_size[1] else None

    def encode(self, images: Tensor) -> Tensor:
        """Renders [B, 3, H, W] in [0, 1] -> [B, 3, s, s] in [-1, 1] at the UNet's sample size (float32, differentiable)."""
        return _resize(images.float(), self.native_size) * 2.0 - 1.0

    def decode(self, x0: Tensor) -> Tensor:
        """[-1, 1] pixels -> [0, 1] (the identity up to the value range)."""
        return ((x0.float() + 1.0) * 0.5).clamp(0, 1)
