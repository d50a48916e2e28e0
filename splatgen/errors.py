"""Errors a user can cause and fix. Internal invariants use ``assert`` instead."""


class SplatgenError(Exception):
    """Base class of the errors splatgen reports to the user (one clear message, no deep traceback)."""


class ConfigError(SplatgenError, ValueError):
    """A config key is unknown, has the wrong type, or a value is out of its allowed range."""


class PromptError(SplatgenError, ValueError):
    """The prompt is empty or unusable."""


class ModelLoadError(SplatgenError, OSError):
    """Diffusion weights could not be loaded from the given hub id or folder."""


class DeviceError(SplatgenError, RuntimeError):
    """The requested device (e.g. CUDA) is not available."""


class RunDirError(SplatgenError, FileExistsError):
    """The output folder already holds a run and would be overwritten."""


class NonFiniteError(SplatgenError, FloatingPointError):
    """The loss or the parameters became NaN/Inf; the last good checkpoint was kept."""


class NotARunError(SplatgenError, FileNotFoundError):
    """A folder given as a run is not one (or not a finished one): the message says what is missing."""
