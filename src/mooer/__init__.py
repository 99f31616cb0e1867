"""mooer: MooER speech recognition and Chinese→English speech translation.

>>> from mooer import MooER
>>> model = MooER.from_pretrained("pretrained_models")          # official release directory
>>> model.transcribe(["a.wav", "b.flac"], task="asr")[0].text
"""

__version__ = "0.1.0"

from mooer.decoding import PRESETS, DecodingOptions, Result  # noqa: E402
from mooer.errors import AudioError, CheckpointError, MooerError  # noqa: E402


def __getattr__(name):  # torch, transformers and the audio decoders are imported when first used
    if name == "MooER":
        from mooer.api import MooER

        return MooER
    if name == "load_audio":
        from mooer.audio import load_audio

        return load_audio
    raise AttributeError(name)


__all__ = ["MooER", "DecodingOptions", "PRESETS", "Result", "load_audio", "AudioError", "CheckpointError",
           "MooerError", "__version__"]
