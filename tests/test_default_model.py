"""The bundled default model: it ships inside the package, loads without any path, and transcribes."""

from __future__ import annotations

import csv
import subprocess
import sys

from mooer.assets import ASSETS, default_model_path, sample_path


def samples() -> dict[str, dict]:
    with open(ASSETS / "samples.tsv", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


def test_default_model_is_small_and_in_the_package():
    path = default_model_path()
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"default model is {size / 2**20:.1f} MB"
    assert sample_path().is_file() and set(samples()) == {"sample_zh.wav", "sample_en.wav"}


def test_default_model_loads_and_knows_all_tasks():
    from mooer.api import MooER

    model = MooER.from_pretrained(device="cpu")
    assert model.tasks == ["asr", "asr_ast", "ast"] and model.default_task == "asr"
    res = model.transcribe([sample_path("sample_zh.wav"), sample_path("sample_en.wav")], task="asr_ast",
                           decoding="greedy")
    assert all(r.error is None and r.text for r in res)
    assert res[0].asr is not None and res[0].ast is not None


def test_readme_main_command_prints_the_samples_transcripts():
    """The README's first command (no --model, official preset) prints what each bundled sample says.

    The samples are held-out test utterances that this model transcribes correctly (its test-split CER is
    still far from zero; benchmarks/RESULTS_demo.md). This pins the whole path — audio, features, model,
    prompt, beam search, detokenisation — to the bundled weights."""
    for name, row in samples().items():
        out = subprocess.run([sys.executable, "-m", "mooer.cli", "transcribe", str(sample_path(name))],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == row["text"], name


def test_forcing_the_transcript_gives_the_translation_asr_ast_writes_after_it():
    """benchmarks/translation_given_transcript.py feeds a transcript as if the model had written it. The
    zh sample's asr_ast transcript is the reference, so forcing the reference must continue exactly as
    asr_ast decoding does (greedy), and forcing another transcript must change the translation."""
    import importlib.util
    from pathlib import Path

    from mooer.api import MooER

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "translation_given_transcript.py"
    spec = importlib.util.spec_from_file_location("translation_given_transcript", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    model = MooER.from_pretrained(device="cpu")
    reference = samples()["sample_zh.wav"]["text"]
    [written] = model.transcribe([sample_path("sample_zh.wav")], task="asr_ast", decoding="greedy")
    assert written.asr == reference and written.ast
    features = [model.featurize(sample_path("sample_zh.wav"))[0]]
    assert bench.translate_after(model, features, [reference], "greedy") == [written.ast]
    assert bench.translate_after(model, features, ["文件已保存"], "greedy") != [written.ast]
