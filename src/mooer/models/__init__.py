"""Neural network modules of MooER: the SANM encoder, the adapter, and the full model."""

from mooer.models.adapter import LinearAdapter
from mooer.models.sanm import SANMEncoder, SANMEncoderConfig

__all__ = ["LinearAdapter", "SANMEncoder", "SANMEncoderConfig"]
