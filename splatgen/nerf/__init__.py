"""A pure-PyTorch NeRF baseline in the style of stable-dreamfusion's ``--backbone grid`` (see docs/NERF.md)."""

from .encoding import HashGridEncoding
from .export import nerf_to_gaussian_params
from .field import NeRFField
from .model import NeRFModel
from .occupancy import OccupancyGrid
from .render import NerfRenderOutput, camera_rays, render_nerf

__all__ = [
    "HashGridEncoding",
    "NeRFField",
    "NeRFModel",
    "NerfRenderOutput",
    "OccupancyGrid",
    "camera_rays",
    "nerf_to_gaussian_params",
    "render_nerf",
]
