"""Replaying a UNet's forward from CUDA graphs (one per input shape): SDS calls the same UNet with the same
shapes thousands of times, and at small sizes its forward is bound by kernel launches, not arithmetic."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .loading import one_line

log = logging.getLogger("splatgen")


class CudaGraphUNet:
    """Replays a UNet's forward from CUDA graphs, one per input shape.

    SDS calls the same UNet with the same shapes thousands of times, and at the bundled prior's 64x64 (or
    at one view) its forward is bound by kernel launches, not arithmetic: replaying a captured graph removes
    them. Each new (sample, timestep, embedding, class labels) shape and dtype is captured once, after two
    warm-up calls on a side stream; inputs are copied into the graph's static buffers and the output is cloned
    out. ``class_labels`` (a camera-conditioned prior's [N, camera_dim] cameras, or None) is one more static
    buffer: a graph captured with labels replays only with labels of that shape, one captured without them only
    without. Up to ``max_graphs`` shapes are kept (resolution milestones add one each); beyond that, or if a
    capture fails, the call runs eagerly (a failure is logged once and disables capture).

    What a graph cannot see changing must not change between replays: the UNet's weights are updated in place
    or not at all, and attention processors read no Python state that differs from call to call (the served
    cross-view layers' ``mix`` is a constant; a gated layer's gate is a tensor, read from its memory).
    """

    def __init__(self, unet: torch.nn.Module, max_graphs: int = 8):
        self.unet = unet
        self.max_graphs = max_graphs
        self.graphs: Dict[Tuple, Tuple[Any, Tuple[Optional[Tensor], ...], Tensor]] = {}
        self.failed = False

    def eager(self, x: Tensor, t: Tensor, emb: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        return self.unet(x, t, encoder_hidden_states=emb, class_labels=class_labels).sample

    def _capture(self, inputs: Tuple[Optional[Tensor], ...]):
        static = tuple(None if a is None else a.clone() for a in inputs)
        device = inputs[0].device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.eager(*static)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.eager(*static)
        return graph, static, out

    @staticmethod
    def _key(inputs: Tuple[Optional[Tensor], ...]) -> Tuple:
        return tuple(None if a is None else (tuple(a.shape), a.dtype) for a in inputs)

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, emb: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        if self.failed or x.device.type != "cuda":
            return self.eager(x, t, emb, class_labels)
        inputs = (x, t, emb, class_labels)
        key = self._key(inputs)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                return self.eager(*inputs)
            try:
                entry = self.graphs[key] = self._capture(inputs)
            except Exception as exc:  # capture is an optimisation: never let it break a run
                log.warning("CUDA-graph capture of the UNet failed (%s); running it eagerly", one_line(exc))
                self.failed = True
                return self.eager(*inputs)
        graph, static, out = entry
        for buf, a in zip(static, inputs):
            if buf is not None:
                buf.copy_(a)
        graph.replay()
        return out.clone()
