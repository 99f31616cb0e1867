"""Typed errors. Every error names its cause (a file, a key, a limit)."""

from __future__ import annotations


class MooerError(Exception):
    """Base class of every error mooer raises on purpose."""


class AudioError(MooerError):
    """An input could not be turned into a usable 16 kHz waveform.

    ``source`` names the input (a path, or ``<bytes>``, ``<array>``, ...), ``reason`` says what is wrong in
    words fit for any user; ``detail`` (optional) adds what the decoders said, for whoever debugs it.
    ``str()`` gives all three: ``"source: reason (detail)"``.
    """

    def __init__(self, source, reason: str, detail: str | None = None):
        self.source = str(source)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.source}: {reason}" + (f" ({detail})" if detail else ""))


class CheckpointError(MooerError):
    """A checkpoint is missing, malformed, or does not match the model (strict loading)."""


class ConfigError(MooerError):
    """A configuration value is invalid."""
