"""Shared pytest fixtures: the golden reference and the tiny official checkpoint, loaded once."""

from __future__ import annotations

import json
import warnings

import pytest
from safetensors.torch import load_file

from fixtures_path import OFFICIAL_TINY, REFERENCE

warnings.filterwarnings("ignore", category=UserWarning, module="peft")


@pytest.fixture(scope="session")
def ref_tensors():
    return load_file(str(REFERENCE / "reference.safetensors"))


@pytest.fixture(scope="session")
def ref_json():
    return json.loads((REFERENCE / "reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_model():
    """The fixture checkpoint in the official layout, CPU float32 (shared: do not mutate)."""
    from mooer.api import MooER

    return MooER.from_pretrained(OFFICIAL_TINY, device="cpu", dtype="float32")
