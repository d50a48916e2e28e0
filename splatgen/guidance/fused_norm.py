"""The VAE encoder channels-last, with its GroupNorms (and the SiLU after each) done by one Triton kernel.

PyTorch's CUDA GroupNorm works on contiguous NCHW, so a channels-last model pays a layout conversion before and
after every norm; kept NCHW, it pays cuDNN's own conversions around every convolution instead (issue 22's
profile of SD's encoder: 8.8 ms of 62 ms of conversions NCHW, 32 ms channels-last). The kernels of
``splatgen_kernels.group_norm`` read and write NHWC, so with them the encoder can stay channels-last throughout.

:func:`fuse_encoder_norms` rewrites a diffusers encoder in place, by module structure (no copy of the weights):

- each ``ResnetBlock2D`` without a time embedding applies ``norm1 -> SiLU`` and ``norm2 -> SiLU``: both norms
  become :class:`FusedGroupNorm` with the SiLU inside and its ``nonlinearity`` the identity;
- the encoder's ``conv_norm_out -> conv_act`` likewise;
- the mid block's attention norm (``Attention.group_norm``, no activation after it) becomes the fused norm
  without SiLU; the attention hands it a [B, C, H*W] view of channels-last memory, which the kernel reads as is.

The fused modules keep the norms' parameters (same tensors, same state-dict keys).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError


class FusedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (+ SiLU when ``act``) computed by the channels-last Triton kernels; output channels-last."""

    def __init__(self, norm: nn.GroupNorm, act: bool) -> None:
        super().__init__(norm.num_groups, norm.num_channels, norm.eps, affine=True, device="meta")
        self.weight, self.bias = norm.weight, norm.bias
        self.act = bool(act)

    # torch.compile (guidance.compile='vae') stops at the norm and runs it eagerly: Dynamo fails inside the
    # Triton launcher instead of breaking the graph (seen with the interpreter's kernels). Registering it as a
    # torch.library op would let Inductor see it; worth doing only if the GPU measurement keeps the switch.
    @torch.compiler.disable
    def forward(self, x: Tensor) -> Tensor:
        from splatgen_kernels.group_norm import group_norm_silu_triton

        return group_norm_silu_triton(x, self.num_groups, self.weight, self.bias, self.eps, self.act)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", act=silu" if self.act else "")


def _fusable(norm, act=None) -> bool:
    return (type(norm) is nn.GroupNorm and norm.affine) and (act is None or isinstance(act, nn.SiLU))


def fuse_encoder_norms(encoder: nn.Module) -> int:
    """Swap the GroupNorm (+ SiLU) pairs of a diffusers VAE ``Encoder`` for fused channels-last ones and put the
    encoder in channels-last memory format. Returns how many norms were swapped (0: nothing recognised).

    Only patterns whose order the module's own ``forward`` guarantees are swapped: a ResnetBlock2D's norms only
    when it has no time embedding (its ``nonlinearity`` would also act on that) and the default norm placement.
    """
    swapped = 0
    for module in list(encoder.modules()):
        if (hasattr(module, "norm1") and hasattr(module, "norm2") and getattr(module, "time_emb_proj", 0) is None
                and getattr(module, "time_embedding_norm", None) == "default"
                and _fusable(module.norm1, module.nonlinearity) and _fusable(module.norm2, module.nonlinearity)):
            module.norm1, module.norm2 = FusedGroupNorm(module.norm1, True), FusedGroupNorm(module.norm2, True)
            module.nonlinearity = nn.Identity()
            swapped += 2
        elif hasattr(module, "conv_norm_out") and _fusable(module.conv_norm_out, getattr(module, "conv_act", None)):
            module.conv_norm_out, module.conv_act = FusedGroupNorm(module.conv_norm_out, True), nn.Identity()
            swapped += 1
        elif _fusable(getattr(module, "group_norm", None)) and hasattr(module, "to_q"):
            module.group_norm = FusedGroupNorm(module.group_norm, False)
            swapped += 1
    encoder.to(memory_format=torch.channels_last)
    return swapped


def enable_fused_group_norm(guidance) -> int:
    """``guidance.fused_group_norm``: fuse the norms of a latent guidance's VAE encoder (:func:`fuse_encoder_norms`).

    Raises:
        ConfigError: the kernels cannot run on the guidance's device (Triton needs CUDA, or its interpreter).
    """
    from ..kernels_glue import sds_backend_available

    if not sds_backend_available(guidance.device):
        raise ConfigError(
            f"guidance.fused_group_norm=true needs Triton on a CUDA device but the run is on {guidance.device}; "
            "set it to false (or set TRITON_INTERPRET=1 before starting Python for Triton's slow interpreter)"
        )
    return fuse_encoder_norms(guidance.vae.encoder)
