"""What latent and pixel-space diffusers guidance share (:class:`UNetGuidance`).

- a ``UNet2DConditionModel`` and the training noise schedule (a ``DDPMScheduler`` built from the model's
  ``scheduler/`` config, so ``alphas_cumprod`` is exactly the schedule the model was trained with);
- text embeddings computed ONCE by :meth:`UNetGuidance.prepare_text` for the plain prompt, each view
  direction, the negative prompt and the empty prompt, after which the text encoder is freed; they form the
  prompt table (:data:`~splatgen.guidance.conditioning.TEXT_KEYS`) whose rows a
  :class:`~splatgen.guidance.conditioning.Conditioning` mixes;
- :meth:`UNetGuidance.predict` runs one batched UNet call on any rows of conditioning and always returns an
  epsilon prediction in float32, whatever the model's ``prediction_type`` is.

Every size is read from the models' configs (latent channels, VAE scaling factor and downsampling factor,
UNet sample size): nothing assumes Stable Diffusion's 4 channels, 0.18215 or a factor of 8.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import DIRECTIONS
from ..errors import ModelLoadError, PromptError, short
from .base import Guidance, directional_prompt
from .conditioning import TEXT_KEYS, Conditioning
from .cuda_graph import CudaGraphUNet
from .loading import PREDICTION_TYPES, freeze
from .multiview import MultiViewSpec, camera_vectors, install_cross_view_attention
from .text_encoders import PromptEncoder


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


def resize_images(images: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize [B, C, H, W] to ``size``; antialiased when shrinking (no aliasing of fine splats)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def sample_side(sample_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """A config ``sample_size`` (int or [h, w]) as (h, w)."""
    if isinstance(sample_size, (list, tuple)):
        return int(sample_size[0]), int(sample_size[1])
    return int(sample_size), int(sample_size)


class UNetGuidance(Guidance):
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
        self.unet = freeze(unet, self.device, dtype)
        # On the CPU, oneDNN's convolutions run faster on channels-last tensors (the bundled prior's UNet, 8 samples
        # at 64 x 64 on 2 cores: 4-17% faster in fp32 and bf16, the same outputs; benchmarks/results/perf/cpu_unet.json);
        # on CUDA cuDNN's default layout stays.
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        #: replay the UNet from CUDA graphs (on CUDA; set by ``splatgen.components.build_guidance`` from ``guidance.cuda_graph``)
        self.cuda_graph = False
        self._graphed: Optional[CudaGraphUNet] = None
        #: run the UNet through ``torch.compile`` (set from ``guidance.compile``; see :meth:`set_compile`)
        self.compile_unet = False
        self._compiled: Optional[torch.nn.Module] = None
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
        #: the text classifier-free guidance measures against: the negative prompt, or the empty prompt
        self._uncond: Optional[Tensor] = None
        #: the empty prompt (classifier-free guidance's unconditional; NFSD and ISM use it beside a negative prompt)
        self._empty: Optional[Tensor] = None
        self._table: Optional[Tensor] = None
        #: the multi-view spec of a camera-conditioned prior (None: a text-to-image prior; see :meth:`set_multiview`)
        self.multiview: Optional[MultiViewSpec] = None

    # ---- multi-view priors ---------------------------------------------------------------------------------------

    def set_multiview(self, spec: Optional[MultiViewSpec]) -> None:
        """Make this a multi-view prior (:mod:`splatgen.guidance.multiview`): the UNet must take the camera as
        ``class_labels`` (``class_embed_type='projection'`` of ``spec.camera_dim`` inputs); its self-attention
        layers then attend across each group of ``spec.num_views`` rows."""
        if spec is None:
            self.multiview = None
            return
        assert self.unet is not None
        cfg = self.unet.config
        if getattr(cfg, "class_embed_type", None) != "projection" or int(getattr(cfg, "projection_class_embeddings_input_dim", 0) or 0) != spec.camera_dim:
            raise ModelLoadError(
                f"{self.model_name}: a multi-view prior's UNet must take the camera as class_embed_type='projection' "
                f"with projection_class_embeddings_input_dim={spec.camera_dim}; this one has class_embed_type="
                f"{getattr(cfg, 'class_embed_type', None)!r}"
            )
        install_cross_view_attention(self.unet, spec.num_views, spec.cross_view_mix)
        self.multiview = spec
        self._graphed = None
        self._compiled = None

    @property
    def joint_views(self) -> int:  # type: ignore[override]
        """Views the prior denoises jointly (1 for a text-to-image prior)."""
        return self.multiview.num_views if self.multiview is not None else 1

    def camera_labels(self, cond: Conditioning) -> Optional[Tensor]:
        """[N, camera_dim] the rows' camera vectors for a multi-view prior (None for a text-to-image one)."""
        if self.multiview is None:
            return None
        try:
            cams = camera_vectors(cond.elevation, cond.azimuth, cond.radius, self.multiview.normalise_distance)
        except ValueError as exc:
            raise ValueError(f"{self.model_name}: {exc}") from None
        return cams.to(self.device, self.dtype)

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
        extra = [negative_prompt, ""] if negative_prompt else [""]
        emb = self.text_encoder.encode(texts + extra)
        n = len(texts)
        self.set_text_embeddings({k: emb[i : i + 1] for i, k in enumerate(keys)}, emb[n : n + 1], view_dependent,
                                 empty=emb[-1:])
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
                f"{len(lost_views)} view-dependent prompt(s) (e.g. {short(lost_views[0])}) exceed the text encoder's "
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
        empty: Optional[Tensor] = None,
    ) -> None:
        """Install precomputed embeddings (what :meth:`prepare_text` does after encoding; benchmarks use it).

        Args:
            cond: [1, L, D] for every view, or a mapping with key ``None`` (plain prompt) and optionally each of
                ``DIRECTIONS`` -> [1, L, D].
            uncond: [1, L, D] the negative (or empty) prompt: what classifier-free guidance measures against.
            view_dependent: use the per-direction embeddings in :meth:`predict` (when present).
            empty: [1, L, D] the empty prompt when ``uncond`` is a negative prompt (default: ``uncond``).
        """
        table = {None: cond} if isinstance(cond, Tensor) else dict(cond)
        if None not in table:
            raise ValueError("text embeddings need the plain prompt's embedding under the key None")
        self._cond = {k: v.detach().to(self.device, self.dtype) for k, v in table.items()}
        self._uncond = uncond.detach().to(self.device, self.dtype)
        self._empty = self._uncond if empty is None else empty.detach().to(self.device, self.dtype)
        self.view_dependent = view_dependent
        self._table = None

    @property
    def text_ready(self) -> bool:
        """True once embeddings are set (by ``prepare_text``, ``set_text_embeddings`` or ``from_modules``); the
        trainer then skips ``prepare_text``, which models built without a text encoder could not run."""
        return self._uncond is not None

    def text_table(self) -> Tensor:
        """[K, L, D] the prompt table in :data:`TEXT_KEYS` order (directions fall back to the plain prompt when
        view-dependent prompting is off or their embedding was not given)."""
        if self._table is None:
            if self._uncond is None or self._empty is None:
                raise RuntimeError("call prepare_text (or set_text_embeddings) before predict")
            plain = self._cond[None]
            rows = {"uncond": self._empty, "negative": self._uncond, "prompt": plain}
            for d in DIRECTIONS:
                rows[d] = self._cond.get(d, plain) if self.view_dependent else plain
            self._table = torch.cat([rows[k] for k in TEXT_KEYS])
        return self._table

    def text_embeddings(self, cond: Conditioning) -> Tensor:
        """[N, L, D] text embeddings of the rows: a row of one text is that embedding exactly; a mix is the
        weighted sum of the table's embeddings (in float32, then the model's dtype)."""
        table = self.text_table()
        w = cond.weights
        one_hot = bool(((w == 0) | (w == 1)).all()) and bool((w.sum(-1) == 1).all())
        if one_hot:
            return table[w.argmax(-1).to(table.device)]
        return torch.einsum("nk,kld->nld", w.to(table.device), table.float()).to(table.dtype)

    # ---- noise prediction --------------------------------------------------------------------------------------

    def predict(self, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """One UNet call on N rows.

        Args:
            x: [N, C, h, w] noisy model-space inputs (any float dtype).
            t: [N] (or scalar) integer timesteps in [0, num_train_timesteps).
            cond: N rows of conditioning (the text of each row; this model reads no camera).

        Returns:
            [N, C, h, w] float32 epsilon predictions. No gradient.
        """
        if self.unet is None:
            raise RuntimeError("this guidance was released")
        N = x.shape[0]
        if len(cond) != N:
            raise ValueError(f"{len(cond)} rows of conditioning for a batch of {N}")
        t = t.to(self.device).reshape(-1).expand(N) if t.numel() == 1 else t.to(self.device).reshape(-1)
        emb = self.text_embeddings(cond)
        cam = self.camera_labels(cond)
        x_in = x.detach()
        with torch.no_grad():
            unet = self._unet_module()
            if self.cuda_graph and self.device.type == "cuda":
                if self._graphed is None or self._graphed.unet is not unet:
                    self._graphed = CudaGraphUNet(unet)
                out = self._graphed(x_in.to(self.dtype), t, emb, cam)
            else:
                xx = x_in.to(self.dtype)
                if self.channels_last:
                    xx = xx.contiguous(memory_format=torch.channels_last)
                out = unet(xx, t, encoder_hidden_states=emb, class_labels=cam).sample
        if out.shape[1] == 2 * x_in.shape[1]:
            out = out[:, : x_in.shape[1]]  # learned-variance models (DeepFloyd IF) append the variance channels
        return prediction_to_epsilon(out, x_in, t, self.alphas_cumprod, self.prediction_type)

    def _unet_module(self) -> torch.nn.Module:
        """The UNet as called: compiled once (``torch.compile``, shapes static) when ``compile_unet`` is set."""
        assert self.unet is not None
        if not self.compile_unet:
            return self.unet
        if self._compiled is None:
            self._compiled = torch.compile(self.unet, dynamic=False)
        return self._compiled

    def set_compile(self, what: str) -> None:
        """``guidance.compile``: 'off', 'unet', 'vae' or 'all' (what this guidance has of it)."""
        self.compile_unet = what in ("unet", "all")
        self._compiled = None
        self._graphed = None

    def release(self) -> None:
        self.unet = None
        self._compiled = None
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
            **({"multiview": self.multiview.to_json()} if self.multiview is not None else {}),
        }
