"""Files shipped inside the package: the default model and a sample recording."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent


def default_model_path() -> Path:
    """The bundled default model directory."""
    path = ASSETS / "default-model"
    if not (path / "config.json").is_file():
        from mooer.errors import CheckpointError

        raise CheckpointError(f"{path}: the bundled default model is missing; pass --model DIR")
    return path


def sample_path(name: str = "sample_zh.wav") -> Path:
    return ASSETS / name
