"""``import mooer`` (and the model, pipeline, CLI and server modules) must not load the audio decoders:
PyAV, soundfile and soxr are imported when audio is first read. A bare GPU image without them can still
decode features, and start-up stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

DECODERS = ("av", "soundfile", "soxr")


def loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {DECODERS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("code", ["import mooer", "from mooer.api import MooER", "import mooer.cli",
                                  "import mooer.inference.longform", "import mooer.serving.app"])
def test_importing_does_not_load_the_audio_decoders(code):
    assert loaded_after(code) == []


def test_reading_audio_loads_them(tmp_path):
    import numpy as np
    import soundfile as sf

    path = tmp_path / "tone.wav"
    sf.write(path, (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 8000)
    assert set(loaded_after(f"import mooer\nmooer.load_audio({str(path)!r})")) >= {"soundfile", "soxr"}


def test_import_mooer_is_light():
    """The package itself imports neither torch nor numpy: `mooer --help`-style uses start at once."""
    probe = "import sys, mooer\nprint(' '.join(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
    assert callable(__import__("mooer").load_audio)  # still there, imported on first use
