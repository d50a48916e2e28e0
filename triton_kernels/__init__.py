"""splatgen's Triton kernels, installed as ``splatgen_kernels`` (the folder is ``triton_kernels/``).

One op per module, each with its kernels, launcher and autograd glue, tested against the PyTorch reference
in ``splatgen`` (or PyTorch's own op):

- :mod:`splatgen_kernels.sds`: the fused SDS gradient (``sds_gradient_triton``, ``sds_loss_triton``).
- :mod:`splatgen_kernels.densify`: densification statistics, decisions, compaction and split sampling
  (``accumulate_stats_triton``, ``densify_decisions_triton``, ``densify_step_triton``).
- :mod:`splatgen_kernels.group_norm`: GroupNorm (+ SiLU) on channels-last activations, forward and backward
  (``group_norm_silu_triton``), tested against ``F.group_norm`` + ``F.silu``.

Nothing here imports ``splatgen``; importing this package does not import Triton (the op modules do).
"""
