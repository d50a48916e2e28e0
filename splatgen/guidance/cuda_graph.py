"""Replaying a UNet's forward from CUDA graphs (one per input shape): SDS calls the same UNet with the same
shapes thousands of times, and at small sizes its forward is bound by kernel launches, not arithmetic."""

from __future__ import annotations

import logging
from typing import Any, Dict, Tuple

import torch
from torch import Tensor

from .loading import one_line

log = logging.getLogger("splatgen")


class CudaGraphUNet:
    """Replays a UNet's forward from CUDA graphs, one per input shape.

    SDS calls the same UNet with the same shapes thousands of times, and at the bundled prior's 64x64 (or
    at one view) its forward is bound by kernel launches, not arithmetic: replaying a captured graph removes
    them. Each new (sample, timestep, embedding) shape and dtype is captured once, after two warm-up calls
    on a side stream; inputs are copied into the graph's static buffers and the output is cloned out. Up to
    ``max_graphs`` shapes are kept (resolution milestones add one each); beyond that, or if a capture
    fails, the call runs eagerly (a failure is logged once and disables capture).
    """

    def __init__(self, unet: torch.nn.Module, max_graphs: int = 8):
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
                log.warning("CUDA-graph capture of the UNet failed (%s); running it eagerly", one_line(exc))
                self.failed = True
                return self.eager(x, t, emb)
        graph, sx, st, se, out = entry
        sx.copy_(x)
        st.copy_(t)
        se.copy_(emb)
        graph.replay()
        return out.clone()
