"""Short inputs pass the same speech/no-speech gate as long ones: silence and noise get an empty text
instead of words the LLM invents, everywhere (API, CLI, server); speech is decoded as before."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from fixtures_path import AUDIO
from mooer.inference.longform import NO_SPEECH, LongFormOptions

SR = 16000


def silence(seconds=5.0):
    return np.zeros(int(SR * seconds), np.float32)


def noise(seconds=10.0):
    return (np.random.default_rng(0).standard_normal(int(SR * seconds)) * 0.1).astype(np.float32)


def wav_bytes(wave):
    buf = io.BytesIO()
    sf.write(buf, wave, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_silence_and_noise_get_no_text_and_speech_still_decodes(tiny_model, ref_json):
    results = tiny_model.transcribe([silence(), noise(), str(AUDIO / "zh1.wav")], task="asr")
    assert [r.text for r in results[:2]] == ["", ""]
    assert all(r.ok and r.notes == [NO_SPEECH] and r.token_ids == [] for r in results[:2])
    assert results[2].text == ref_json["clips"]["zh1"]["tasks"]["asr"]["beam"]["text"]


def test_the_gate_can_be_switched_off(tiny_model):
    [r] = tiny_model.transcribe([silence()], task="asr", long_form=LongFormOptions(speech_gate=False))
    assert r.token_ids and NO_SPEECH not in r.notes  # decoded: the random model writes something


def test_cli_writes_an_empty_line_for_silence_unless_told(tiny_model, tmp_path, capsys):
    from fixtures_path import OFFICIAL_TINY
    from mooer.cli import main

    path = tmp_path / "quiet.wav"
    sf.write(path, silence(), SR)
    common = ["transcribe", str(path), "--model", str(OFFICIAL_TINY), "--device", "cpu", "--format", "jsonl"]
    assert main(common) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == "" and record["notes"] == [NO_SPEECH]
    assert main([*common, "--no-speech-gate"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] and "notes" not in record


def test_server_answers_silence_with_empty_text(tiny_model):
    from fastapi.testclient import TestClient

    from mooer.serving import ServeSettings, create_app

    with TestClient(create_app(tiny_model, ServeSettings())) as client:
        r = client.post("/v1/mooer/transcribe", files={"file": ("quiet.wav", wav_bytes(silence()))},
                        data={"task": "asr"})
        assert r.status_code == 200 and r.json()["text"] == ""
        r = client.post("/v1/audio/transcriptions", files={"file": ("noise.wav", wav_bytes(noise(5.0)))})
        assert r.status_code == 200 and r.json()["text"] == ""
        assert client.app.state.batcher.stats()["submitted"] == 0  # nothing reached the model
