"""Location of the golden fixtures, kept in the repository at ``tests/fixtures`` (see its README.md).

Importing this module fails loudly if the folder is missing: tests that need the fixtures must error, not
skip, when they are absent.
"""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
"""Root of the fixture tree (``audio/``, ``official-tiny/``, ``official-tiny-reference/``)."""

if not FIXTURES.is_dir():
    raise FileNotFoundError(f"golden fixtures not found at {FIXTURES} (they are part of the repository: "
                            "is this a complete clone?)")

AUDIO = FIXTURES / "audio"
OFFICIAL_TINY = FIXTURES / "official-tiny"
REFERENCE = FIXTURES / "official-tiny-reference"
AM_MVN = OFFICIAL_TINY / "paraformer_encoder" / "am.mvn"
CLIPS = ("demo", "zh1", "zh2", "en1", "short")
