"""One bad file never stops a batch (issue 22): a corpus of well-formed and malformed audio, made byte by byte.

Every file either decodes correctly or raises AudioError naming it: through the decoders (path, bytes,
streaming, segments), the library's per-input guard, ``mooer transcribe`` over a mixed folder, ``mooer
prepare kaldi`` and the training dataset. Decoders write nothing to stderr that names no file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import audio_corpus
from audio_corpus import RATE, Case
from fixtures_path import AUDIO, OFFICIAL_TINY
from mooer.audio import audio_info, iter_audio_chunks, load_audio, load_audio_segment
from mooer.errors import AudioError

CASES = audio_corpus.all_cases()
DEFINITE = [c for c in CASES if c.expected is not None or c.tone or c.error is not None]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    audio_corpus.make(folder)
    return folder


def _outcome(call, source_name: str):
    """The call's value, or the AudioError it raised (checked to name the source); anything else propagates."""
    try:
        return call()
    except AudioError as exc:
        assert exc.source == source_name and str(exc).startswith(f"{source_name}: "), str(exc)
        return exc


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0])))
    return float(np.argmax(spectrum) * RATE / samples.shape[0])


def _check_decoded(case: Case, wave) -> None:
    assert isinstance(wave, np.ndarray), f"{case.name} ({case.what}) should decode: {wave}"
    assert wave.dtype == np.float32 and wave.ndim == 1
    if case.expected is not None:
        assert wave.shape == case.expected.shape
        np.testing.assert_allclose(wave, case.expected, rtol=0, atol=case.atol)
    if case.tone:  # lossy codecs: block padding and priming change the length a little
        assert abs(wave.shape[0] - audio_corpus.N) <= 0.05 * audio_corpus.N
        assert _peak_hz(wave) == pytest.approx(440, abs=5)
        assert np.sqrt(np.mean(wave**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_file_decodes_or_raises_audio_error(corpus_dir: Path, case: Case, capfd, caplog) -> None:
    path = corpus_dir / case.name
    name = str(path)
    with caplog.at_level(logging.WARNING, logger="mooer"):
        wave = _outcome(lambda: load_audio(path), name)
        info = _outcome(lambda: audio_info(path), name)
        chunks = _outcome(lambda: np.concatenate(list(iter_audio_chunks(path, 0.1))), name)
        segment = _outcome(lambda: load_audio_segment(path, 0.1, 0.3), name)
        from_bytes = _outcome(lambda: load_audio(path.read_bytes(), name=name), name)
    if case.expected is not None or case.tone:
        _check_decoded(case, wave)
        assert not isinstance(info, AudioError) and info.sample_rate == RATE
        np.testing.assert_array_equal(chunks, wave)
        np.testing.assert_array_equal(from_bytes, wave)
        if case.expected is not None:  # seeked (libsndfile) or cut after decoding: the same samples
            np.testing.assert_array_equal(segment, wave[1600:4800])
    elif case.error is not None:
        for outcome in (wave, chunks, from_bytes):
            assert isinstance(outcome, AudioError), f"{case.name} ({case.what}) should fail, got {outcome!r}"
            assert case.error in str(outcome), str(outcome)
        assert isinstance(segment, AudioError)  # the segment may fail first for being empty
    else:  # garbage in a real codec: decoding it or refusing it are both right, consistently
        assert isinstance(chunks, AudioError) == isinstance(wave, AudioError)
    for outcome in (wave, info, chunks, segment, from_bytes):
        if isinstance(outcome, AudioError):
            assert "\n" not in str(outcome) and " at 0x" not in str(outcome)  # one line, no object reprs
    # Nothing on the process's stderr (mpg123, FFmpeg); the warnings mooer logs name the file.
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert all(name in record.getMessage() for record in caplog.records)


def test_corpus_covers_what_the_issue_lists() -> None:
    kinds = Counter("decodes" if c.expected is not None or c.tone else "fails" if c.error else "either"
                    for c in CASES)
    assert len(CASES) >= 55 and kinds["decodes"] >= 20 and kinds["fails"] >= 25
    names = {c.name for c in CASES}
    assert {"float16.wav", "unknown_tag.wav", "ext_unknown_guid.wav", "random.mp3", "video_only.mp4"} <= names


def test_random_bytes_named_mp3_are_not_decodable_and_stderr_stays_clean(tmp_path: Path, capfd) -> None:
    """libsndfile would pick mpg123 by the name and print 'Note: Illegal Audio-MPEG-Header ...' on fd 2, and
    call the file a pipe that does not exist."""
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(5).bytes(5000))
    for call in (load_audio, audio_info):
        with pytest.raises(AudioError, match=r"noise\.mp3: not a decodable audio file") as info:
            call(path)
        assert "does not exist" not in str(info.value) and "pipe" not in str(info.value)
    assert capfd.readouterr().err == ""


def test_damaged_mp3_decodes_with_a_warning_naming_it(tmp_path: Path, caplog) -> None:
    """As the ffmpeg tool does, a packet the codec rejects is dropped and decoding goes on (mpg123 gave up)."""
    mp3 = audio_corpus._mp3(audio_corpus.tone(3 * RATE).astype(np.float32))
    middle = len(mp3) // 2
    path = tmp_path / "scratched.mp3"
    path.write_bytes(mp3[:middle] + np.random.default_rng(3).bytes(64) + mp3[middle + 64:])
    with caplog.at_level(logging.WARNING, logger="mooer.audio"):
        wave = load_audio(path)
    assert wave.shape[0] > 0.95 * 3 * RATE
    assert [r.getMessage() for r in caplog.records] == [f"{path}: skipped 1 damaged packet (invalid data)"]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    for call in (load_audio, audio_info, lambda p: iter_audio_chunks(p, 1.0)):
        with pytest.raises(AudioError, match=r"live\.wav: is a named pipe \(FIFO\), not a regular file"):
            call(fifo)


@pytest.mark.parametrize("raised", [AttributeError("'NoneType' object has no attribute 'x'"), MemoryError(),
                                    RuntimeError("boom"), IndexError("list index out of range")])
def test_any_decoder_exception_becomes_an_audio_error(tmp_path: Path, monkeypatch, raised) -> None:
    import av
    import soundfile as sf

    path = tmp_path / "tone.wav"
    sf.write(path, audio_corpus.tone(), RATE, subtype="PCM_16")
    monkeypatch.setattr(sf, "SoundFile", _raiser(raised))
    monkeypatch.setattr(av, "open", _raiser(raised))
    for call in (load_audio, audio_info, lambda p: list(iter_audio_chunks(p, 1.0))):
        with pytest.raises(AudioError, match=rf"tone\.wav: not a decodable audio file .*{type(raised).__name__}"):
            call(path)
    monkeypatch.undo()
    monkeypatch.setattr("mooer.audio._resample", _raiser(raised))  # past the decoders: still the file's error
    with pytest.raises(AudioError, match=rf"tone\.wav: decoding failed \({type(raised).__name__}"):
        load_audio(path, sample_rate=8000)


def test_keyboard_interrupt_is_not_swallowed(tmp_path: Path, monkeypatch) -> None:
    import soundfile as sf

    path = tmp_path / "tone.wav"
    sf.write(path, audio_corpus.tone(), RATE, subtype="PCM_16")
    monkeypatch.setattr("mooer.audio._resample", _raiser(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        load_audio(path, sample_rate=8000)


def _raiser(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


# ------------------------------------------------------------------------------------- library guard
def test_unexpected_exception_in_a_per_file_step_fails_that_file_only(tiny_model, tmp_path, monkeypatch,
                                                                      ref_json) -> None:
    """Probe, load, featurise and long-form decoding: an exception of any type is that input's error."""
    import mooer.api
    from mooer.api import MooER

    files = {}
    for stem in ("probe", "load", "featurise", "ok", "long", "long_ok"):
        files[stem] = tmp_path / f"{stem}.wav"
        shutil.copy(AUDIO / ("zh1.wav" if stem != "long_ok" else "short.wav"), files[stem])

    def failing(real, stem, exc):
        def wrapper(source, *args, **kwargs):
            if Path(str(source)).stem == stem or kwargs.get("name", "").endswith(f"{stem}.wav"):
                raise exc
            return real(source, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(mooer.api, "audio_info", failing(mooer.api.audio_info, "probe", RuntimeError("probe broke")))
    monkeypatch.setattr(mooer.api, "load_audio", failing(mooer.api.load_audio, "load",
                                                          AttributeError("'NoneType' object has no attribute 'x'")))
    real_featurize = MooER.featurize_waveform

    def featurize(self, wave, name="<input>"):
        if name.endswith("featurise.wav"):
            raise ValueError("features broke")
        return real_featurize(self, wave, name)

    monkeypatch.setattr(MooER, "featurize_waveform", featurize)
    paths = [str(files[s]) for s in ("probe", "load", "featurise", "ok")]
    for workers in (1, 2):  # in this thread and in the loader threads
        results = tiny_model.transcribe(paths, task="asr", num_workers=workers)
        assert [r.error for r in results[:3]] == [
            f"{paths[0]}: unexpected RuntimeError: probe broke",
            f"{paths[1]}: unexpected AttributeError: 'NoneType' object has no attribute 'x'",
            f"{paths[2]}: unexpected ValueError: features broke",
        ]
        assert results[3].ok and results[3].text == ref_json["clips"]["zh1"]["tasks"]["asr"]["beam"]["text"]

    real_long = mooer.api.transcribe_long

    def long(model, source, **kwargs):
        if kwargs["name"].endswith("long.wav"):
            raise OSError("segment read broke")
        return real_long(model, source, **kwargs)

    monkeypatch.setattr(mooer.api, "transcribe_long", long)
    results = tiny_model.transcribe([str(files["long"]), str(files["long_ok"])], task="asr", long_form=True)
    assert results[0].error == f"{files['long']}: unexpected OSError: segment read broke"
    assert results[1].ok and results[1].segments


def test_keyboard_interrupt_stops_transcribe(tiny_model, monkeypatch) -> None:
    import mooer.api

    monkeypatch.setattr(mooer.api, "load_audio", _raiser(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        tiny_model.transcribe([str(AUDIO / "zh1.wav"), str(AUDIO / "short.wav")], num_workers=2)


# ------------------------------------------------------------------------------------------------ CLI
def _expect_decodes(case: Case) -> bool | None:
    return True if case.expected is not None or case.tone else False if case.error else None


def test_cli_transcribe_mixed_folder(corpus_dir: Path, tmp_path: Path, capsys, ref_json) -> None:
    """The done-criterion: exit 1, every good result written, one error line per bad file, no traceback."""
    from mooer.cli import main

    folder = tmp_path / "mixed"
    shutil.copytree(corpus_dir, folder / "corpus")
    for clip in ("zh1", "short"):
        shutil.copy(AUDIO / f"{clip}.wav", folder / f"{clip}.wav")
    out = tmp_path / "hyp.jsonl"
    code = main(["transcribe", str(folder), "--model", str(OFFICIAL_TINY), "--task", "asr", "--format", "jsonl",
                 "--output", str(out), "--batch-size", "16"])
    captured = capsys.readouterr()
    rows = {Path(r["audio"]).name: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert code == 1
    assert len(rows) == len(CASES) + 2
    for clip in ("zh1", "short"):
        assert rows[f"{clip}.wav"]["text"] == ref_json["clips"][clip]["tasks"]["asr"]["beam"]["text"]
    failed = set()
    for case in CASES:
        row = rows[case.name]
        if _expect_decodes(case) is not None:
            assert ("error" not in row) == _expect_decodes(case), row
        if "error" in row:
            failed.add(case.name)
            assert row["error"].startswith(str(folder / "corpus" / case.name) + ": ")
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("mooer: error: ")]
    assert sorted(errors) == sorted(f"mooer: error: {rows[name]['error']}" for name in failed)
    assert f"mooer: {len(failed)} of {len(CASES) + 2} inputs failed" in lines
    for line in lines:  # the rest: the progress bar and warnings that name their file
        assert line in errors or line.startswith(("mooer: ", "asr: ")) or str(folder) in line, line


def test_cli_transcribe_fifo_and_plain_error_lines(tmp_path: Path, capsys) -> None:
    from mooer.cli import main

    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    code = main(["transcribe", str(fifo), str(AUDIO / "short.wav"), "--model", str(OFFICIAL_TINY),
                 "--task", "asr"])
    captured = capsys.readouterr()
    assert code == 1 and len(captured.out.splitlines()) == 1
    assert f"mooer: error: {fifo}: is a named pipe (FIFO), not a regular file" in captured.err


def test_cli_error_lines_stay_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import mooer.api
    from mooer.cli import main

    bad = tmp_path / "bad.wav"
    shutil.copy(AUDIO / "short.wav", bad)
    real = mooer.api.load_audio
    monkeypatch.setattr(mooer.api, "load_audio", lambda source, **kw: _raiser(RuntimeError("first\nsecond"))()
                        if str(source) == str(bad) else real(source, **kw))
    assert main(["transcribe", str(bad), str(AUDIO / "short.wav"), "--model", str(OFFICIAL_TINY)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"mooer: error: {bad}: unexpected RuntimeError: first second" in err and "second" not in err


# ------------------------------------------------------------------------------------- data pipeline
def test_prepare_kaldi_skips_and_counts_every_unreadable_file(corpus_dir: Path, tmp_path: Path, capsys,
                                                               caplog) -> None:
    from mooer.cli import main

    data = tmp_path / "kaldi"
    data.mkdir()
    ids = [f"utt{i:03d}" for i in range(len(CASES))]
    (data / "wav.scp").write_text("".join(f"{i} {corpus_dir / c.name}\n" for i, c in zip(ids, CASES)), "utf-8")
    (data / "text").write_text("".join(f"{i} 文本\n" for i in ids), encoding="utf-8")
    out = tmp_path / "train.jsonl"
    with caplog.at_level(logging.WARNING, logger="mooer.data"):
        assert main(["prepare", "kaldi", str(data), "--out", str(out)]) == 0
    kept = {json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()}
    unreadable = {i for i, c in zip(ids, CASES) if i not in kept}
    for i, case in zip(ids, CASES):
        # the header is what counts here: a file whose samples fail later (too short, damaged) is kept
        try:
            audio_info(corpus_dir / case.name)
            assert i in kept, case.name
        except AudioError:
            assert i in unreadable and _expect_decodes(case) is not True, case.name
    assert f"skipped {len(unreadable)} ({len(unreadable)} unreadable audio)" in capsys.readouterr().err
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(unreadable)
    for i, case in zip(ids, CASES):
        if i in unreadable:
            assert sum(m.startswith(f"skipping recording {i}: {corpus_dir / case.name}: ") for m in warned) == 1


def test_training_dataset_skips_undecodable_utterances(corpus_dir: Path) -> None:
    from transformers import AutoTokenizer

    from fixtures_path import AM_MVN
    from mooer.data import SpeechDataset, Utterance
    from mooer.features import FeatureExtractor
    from mooer.prompting import PromptBuilder

    utts = [Utterance(c.name, str(corpus_dir / c.name), "文本", 0.5) for c in DEFINITE]
    utts += [Utterance(f"seg_{c.name}", str(corpus_dir / c.name), "文本", 0.2, start=0.1, end=0.3) for c in DEFINITE]
    prompts = PromptBuilder(AutoTokenizer.from_pretrained(OFFICIAL_TINY / "Qwen2-tiny"))
    ds = SpeechDataset(utts, FeatureExtractor.from_file(AM_MVN), prompts)
    samples = [ds[i] for i in range(len(ds))]
    for utt, sample in zip(utts, samples):
        case = next(c for c in DEFINITE if utt.audio.endswith(c.name))
        assert (sample is not None) == _expect_decodes(case), utt.id
    bad = sum(s is None for s in samples)
    assert ds.skipped == Counter({"unreadable audio": bad})
    with pytest.raises(AudioError, match=r"float16\.wav: unsupported WAV encoding"):
        next(u for u in utts if u.id == "seg_float16.wav").load_audio()
