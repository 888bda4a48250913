"""The one base of every error a user can cause (a bad image, option, config, model reference or data
folder). Entry points catch :class:`ArtlensError` once and print its message, which names the problem
and the fix, instead of a traceback."""
from __future__ import annotations

__all__ = ["ArtlensError"]


class ArtlensError(Exception):
    """Base of ConfigError, ImageError, DataError, ModelError, ExplainError, SynthError and
    OfflineWeightsError. Each also derives from the builtin it always was (ValueError, RuntimeError)."""
