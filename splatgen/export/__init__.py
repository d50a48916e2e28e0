"""Files for the tools people use: the standard 3DGS ``.ply`` (:mod:`.ply`) and image grids (:mod:`.images`)."""

from .images import save_image_grid
from .ply import gaussians_to_ply_array, load_ply, save_ply

__all__ = ["gaussians_to_ply_array", "load_ply", "save_image_grid", "save_ply"]
