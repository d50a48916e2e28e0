"""One blended cross-view self-attention layer on the GPU (or CPU): the two-pass reference (each attention with its
own projections and output projection, blended after: what ``CrossViewAttnProcessor.two_pass`` does) against the
one-pass SDPA form (``splatgen.guidance.multiview._sdpa_attention``: projections once, two SDPA calls, one output
projection), with their outputs and the gradient of a trained gate compared, at the bundled prior's layer shapes
and at MVDream-sized ones.

    python benchmarks/perf/cross_view_attention.py --out $OUT/cross_view_attention.json            # CUDA
    python benchmarks/perf/cross_view_attention.py --out /tmp/cva.json --device cpu --small        # a smoke run

Rows: tokens per view L, width C, heads H, dtype, the largest relative error over mixes 0.47, -0.7, 1 and 0, the ms
of each form at mix 0.47 (mean of 50 calls after 3), and the gate's gradient through each (mix = tanh(0.3)).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402

from splatgen.guidance.multiview import _sdpa_attention  # noqa: E402

F = torch.nn.functional
SHAPES = [(256, 128, 4), (64, 192, 4), (1024, 320, 5), (4096, 320, 5)]  # (L, C, H): prior 16x16, 8x8; MVDream
VIEWS, ROWS = 4, 8  # 2 objects x 4 views


def two_pass(h, proj, heads, mix):
    N, L, C = h.shape

    def attend(x):
        B = x.shape[0]
        q, k, v = (proj[i](x).view(B, -1, heads, C // heads).transpose(1, 2) for i in range(3))
        return proj[3](F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, C))

    joint = attend(h.reshape(N // VIEWS, VIEWS * L, C)).reshape(N, L, C)
    alone = attend(h)
    return alone + mix * (joint - alone)


def one_pass(h, proj, heads, mix):
    q, k, v = (proj[i](h) for i in range(3))
    return proj[3](_sdpa_attention(q, k, v, VIEWS, heads, mix))


def ms(f, device, reps=50):
    for _ in range(3):
        f()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="the two small shapes, fp32, 3 timed calls")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    shapes = SHAPES[:2] if args.small else SHAPES
    dtypes = [torch.float32] if args.small else [torch.float32, torch.float16]
    torch.manual_seed(0)
    rows = []
    for L, C, H in shapes:
        for dtype in dtypes:
            proj = [torch.nn.Linear(C, C, bias=i == 3).to(device, dtype) for i in range(4)]
            h = torch.randn(ROWS, L, C, device=device, dtype=dtype)
            with torch.no_grad():
                err = max(float((one_pass(h, proj, H, m).float() - two_pass(h, proj, H, m).float()).norm()
                                / two_pass(h, proj, H, m).float().norm()) for m in (0.47, -0.7, 1.0, 0.0))
                reps = 3 if args.small else 50
                t_two = ms(lambda: two_pass(h, proj, H, 0.47), device, reps)
                t_one = ms(lambda: one_pass(h, proj, H, 0.47), device, reps)
            grads = []
            for form in (two_pass, one_pass):
                gate = torch.tensor(0.3, device=device, requires_grad=True)
                form(h, proj, H, torch.tanh(gate)).float().square().mean().backward()
                grads.append(float(gate.grad))
            rows.append({"tokens_per_view": L, "width": C, "heads": H, "dtype": str(dtype).replace("torch.", ""),
                         "max_rel_err": err, "ms_two_pass": round(t_two, 3), "ms_one_pass": round(t_one, 3),
                         "gate_grad_two_pass": grads[0], "gate_grad_one_pass": grads[1]})
            print(rows[-1], flush=True)
    result = {"benchmark": "one blended cross-view attention layer: two-pass reference vs one-pass SDPA form",
              "environment": environment(), "views": VIEWS, "rows_per_call": ROWS, "rows": rows}
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
