"""splatgen: text-to-3D with Gaussian splatting and score distillation.

Quick start::

    import splatgen
    result = splatgen.generate("a red mug", out_dir="runs/mug")
    result.save_ply("mug.ply")
    splatgen.generate_many(["a red mug", "a blue chair"], "batch/")   # one folder per prompt, resumable
"""

__version__ = "0.1.0"

__all__ = ["generate", "generate_many", "load_result", "GenerationResult", "load_config", "Config", "__version__"]


def __getattr__(name):
    # Heavy imports (torch, diffusers) only when the API is used, so `splatgen --help` stays fast.
    if name in ("generate", "GenerationResult", "load_result"):
        from . import api

        return getattr(api, name)
    if name == "generate_many":
        from . import batch

        return batch.generate_many
    if name in ("load_config", "Config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'splatgen' has no attribute {name!r}")
