"""Loading diffusers-format models: where the weights are, and one clear error when they cannot be loaded.

Every failure of a ``from_pretrained`` call becomes one :class:`~splatgen.errors.ModelLoadError` that says
what was tried (folder or hub id), the first line of the underlying error, and how to get a loadable copy
(this project's machines have no network: download first, pass the folder). Local folders are checked up
front for the subfolders a layout needs, so a typo reads "folder not found", not a hub error.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, List, Sequence, Tuple, TypeVar, Union

import torch

from ..errors import ConfigError, ModelLoadError

T = TypeVar("T")

#: Subfolders (diffusers layout) a Stable Diffusion model folder must have.
SD_LAYOUT = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: Subfolders a pixel-space model folder must have (plus a text encoder, see ``PROMPT_ENCODER_LOADERS``).
PIXEL_LAYOUT = ("unet",)
#: The Stable Diffusion model the framework is tuned for (used in error messages).
DEFAULT_SD_ID = "stabilityai/stable-diffusion-2-1-base"
#: Prediction types the schedulers of diffusers use; all are converted to epsilon.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def load_errors() -> Tuple[type, ...]:
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


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``TypeName: first non-empty line of the message`` (shortened), for error messages."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0].rstrip(".") if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def layout_help(layout: Sequence[str], extra: str = "") -> str:
    folders = ", ".join(f"{name}/" for name in layout)
    return (
        f"Expected a diffusers-format model: a folder (or hub id) with the subfolders {folders}{extra}, each "
        "holding its config.json (scheduler/: scheduler_config.json) and weights. This machine may have no "
        "network access, so download the weights beforehand, e.g. "
        f"`huggingface-cli download {DEFAULT_SD_ID} --local-dir ./models/sd21-base`, and pass the folder "
        "(guidance.model=./models/sd21-base)."
    )


def looks_like_path(model: str) -> bool:
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
        raise ModelLoadError("guidance.model is empty. " + layout_help(layout, extra_help))
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {model!r} is a file, not a folder. " + layout_help(layout, extra_help))
        missing = [name for name in layout if not (path / name).is_dir()]
        if missing:
            present = sorted(p.name + "/" for p in path.iterdir() if p.is_dir())
            raise ModelLoadError(
                f"model folder {str(path)!r} lacks the subfolder(s) {[m + '/' for m in missing]} "
                f"(it holds {present or 'no subfolders'}). " + layout_help(layout, extra_help)
            )
        return path
    if looks_like_path(model):
        raise ModelLoadError(
            f"model folder {model!r} ({str(path.absolute())}) does not exist. " + layout_help(layout, extra_help)
        )
    return model  # a hub id: only from_pretrained can tell whether it is reachable


def load_component(what: str, source: Union[Path, str], layout: Sequence[str], loader: Callable[[], T]) -> T:
    """Run one ``from_pretrained`` call, turning loading failures into a :class:`ModelLoadError`."""
    try:
        return loader()
    except ModelLoadError:
        raise
    except load_errors() as exc:
        kind = "folder" if isinstance(source, Path) else "hub id (no local folder has that name)"
        raise ModelLoadError(
            f"could not load the {what} from the {kind} {str(source)!r}: {one_line(exc)}. " + layout_help(layout)
        ) from exc


def transformers_dtype_kwarg() -> str:
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
    return load_component("noise scheduler", source, layout, lambda: DDPMScheduler.from_pretrained(source, subfolder="scheduler"))


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), so oneDNN runs bf16 convolutions and
    matrix products at about twice the fp32 rate; elsewhere bf16 is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


def resolve_dtype(name: str, device: Union[torch.device, str]) -> torch.dtype:
    """The torch dtype for a config value ``'auto' | 'fast' | 'fp32' | 'fp16' | 'bf16'`` on ``device``.

    ``'auto'`` is fp16 on CUDA and fp32 elsewhere. ``'fast'`` is fp16 on CUDA and, on a CPU that computes bf16
    in hardware (:func:`cpu_has_native_bf16`), bf16, else fp32: the bundled prior's default, whose UNet runs
    twice as fast that way on such CPUs with the same quality on the known-answer world (README's numbers).
    fp16 on the CPU falls back to fp32 with a warning: many CPU ops have no fp16 kernel (and those that do are
    slow). bf16 on a GPU without bf16 support falls back to fp16 with a warning.
    """
    device = torch.device(device)
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name == "fast":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"guidance.dtype={name!r} is not allowed; choose one of {['auto', 'fast'] + list(_DTYPES)}")
    dtype = _DTYPES[name]
    if dtype == torch.float16 and device.type == "cpu":
        warnings.warn("guidance.dtype=fp16 on the CPU: many CPU ops lack fp16 kernels, using fp32 instead", UserWarning, stacklevel=2)
        return torch.float32
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn("guidance.dtype=bf16 is not supported by this GPU; using fp16 instead", UserWarning, stacklevel=2)
        return torch.float16
    return dtype


def freeze(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Inference-only: no parameter gradients (gradients still flow through to the inputs), eval mode."""
    module.requires_grad_(False).eval().to(device)
    if next(module.parameters()).dtype != dtype:  # cast only when needed: diffusers warns on every .to(dtype)
        module.to(dtype)
    return module


def load_tiny_encoder(model: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A diffusers ``AutoencoderTiny`` (TAESD) from a hub id or a folder (its own ``config.json`` + weights)."""
    from diffusers import AutoencoderTiny

    layout = ("config.json",)
    path = Path(model).expanduser()
    source: Union[Path, str] = path if path.exists() else model
    if isinstance(source, str) and looks_like_path(model):
        raise ModelLoadError(f"tiny VAE folder {model!r} does not exist; give guidance.tiny_vae_model a folder or hub id "
                             "(e.g. madebyollin/taesd, downloaded beforehand on machines without network)")
    tiny = load_component("tiny VAE", source, layout, lambda: AutoencoderTiny.from_pretrained(source, torch_dtype=dtype))
    return freeze(tiny, device, dtype)
