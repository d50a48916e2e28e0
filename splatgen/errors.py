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


class OutputError(SplatgenError, OSError):
    """A file or folder could not be written (no space, no permission, a read-only file system, a folder where
    a file was asked for)."""


class ZeroGaussiansError(SplatgenError, RuntimeError):
    """Every Gaussian was pruned (or none were given): the message names the settings that did it."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM at a step boundary; ``str()`` says what was kept and how to resume.

    A subclass of :class:`KeyboardInterrupt`, so code that handles Ctrl-C handles it too."""

    def __init__(self, message: str, signum: int = 2, step: int = 0):
        super().__init__(message)
        self.signum = signum
        self.step = step


def short(text: str, limit: int = 80, quote: bool = True) -> str:
    """``repr(text)`` (or the text itself, ``quote=False``) cut to about ``limit`` characters, for messages that
    quote what the user typed: a 10,000-character prompt is not echoed whole."""
    text = str(text)
    show = repr if quote else str
    if len(text) <= limit:
        return show(text)
    return show(text[: limit - 20] + "...") + f" ({len(text)} characters)"
