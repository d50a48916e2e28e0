"""Images to files: a row (or grid) of renders as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Optional, Union

import torch
from torch import Tensor


def save_image_grid(images: Tensor, path: Union[str, Path, BinaryIO], cols: Optional[int] = None) -> None:
    """Save [B, H, W, 3] images in [0, 1] as one PNG, ``cols`` per row."""
    from PIL import Image

    b, h, w, _ = images.shape
    cols = cols or b
    rows = (b + cols - 1) // cols
    grid = torch.ones(rows * h, cols * w, 3)
    for i in range(b):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    Image.fromarray((grid.clamp(0, 1).numpy() * 255 + 0.5).astype("uint8")).save(path, format="PNG")
