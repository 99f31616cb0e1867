"""Typed errors. Every error names its cause (a file, a key, a limit)."""


class MooerError(Exception):
    """Base class of every error mooer raises on purpose."""


class AudioError(MooerError):
    """An input could not be turned into a usable 16 kHz waveform."""

    def __init__(self, source, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class CheckpointError(MooerError):
    """A checkpoint is missing, malformed, or does not match the model (strict loading)."""


class ConfigError(MooerError):
    """A configuration value is invalid."""
