"""Training data layer: manifests, samplers, dataset + collate, augmentation, shards, importers."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fixtures_path import AM_MVN, OFFICIAL_TINY
from mooer.data import (
    DynamicBucketSampler,
    FixedSizeSampler,
    SpeechDataset,
    TaskMix,
    Utterance,
    collate,
    padding_fraction,
    read_manifest,
    write_manifest,
)
from mooer.features import FeatureExtractor
from mooer.prompting import IGNORE_INDEX, PromptBuilder, collate_tokens

SR = 16000


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def write_wav(path: Path, seconds: float, *, sr: int = SR, channels: int = 1, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(int(freq)).standard_normal(t.size)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    sf.write(path, data.astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(OFFICIAL_TINY / "Qwen2-tiny")


@pytest.fixture(scope="module")
def prompts(tokenizer) -> PromptBuilder:
    return PromptBuilder(tokenizer)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor.from_file(AM_MVN)


@pytest.fixture()
def corpus(tmp_path: Path) -> list[Utterance]:
    """Four utterances: two with translations, one 8 kHz stereo, one segment of a longer file."""
    (tmp_path / "wav").mkdir()
    write_wav(tmp_path / "wav" / "a.wav", 1.0, freq=300)
    write_wav(tmp_path / "wav" / "b.wav", 0.6, freq=500)
    write_wav(tmp_path / "wav" / "c.wav", 0.8, sr=8000, channels=2, freq=700)
    write_wav(tmp_path / "wav" / "long.wav", 3.0, freq=900)
    lines = [
        {"id": "a", "audio": "wav/a.wav", "duration": 1.0, "text": "你好 世界", "translation": "hello world"},
        {"id": "b", "audio": "wav/b.wav", "duration": 0.6, "text": "今天", "translation": "today"},
        {"id": "c", "audio": "wav/c.wav", "duration": 0.8, "text": "再见"},
        {"id": "d", "audio": "wav/long.wav", "start": 1.0, "end": 2.5, "text": "片段"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return read_manifest(manifest).utterances


# ---------------------------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------------------------


def test_manifest_round_trip(tmp_path: Path, corpus: list[Utterance]) -> None:
    assert [u.id for u in corpus] == ["a", "b", "c", "d"]
    assert corpus[0].audio == str(tmp_path / "wav" / "a.wav")  # relative → manifest dir
    assert corpus[3].duration == pytest.approx(1.5)  # from start/end
    out = tmp_path / "copy" / "m2.jsonl"
    assert write_manifest(out, corpus) == 4
    assert read_manifest(out).utterances == corpus
    inside = tmp_path / "m3.jsonl"
    write_manifest(inside, corpus)
    assert json.loads(inside.read_text(encoding="utf-8").splitlines()[0])["audio"] == "wav/a.wav"
    assert not list(tmp_path.glob(".*.tmp"))


def test_manifest_bad_lines_skipped_and_counted(tmp_path: Path, caplog) -> None:
    write_wav(tmp_path / "ok.wav", 0.5)
    good = {"id": "ok", "audio": "ok.wav", "duration": 0.5, "text": "好"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "gone", "audio": "missing.wav"}),
        json.dumps({**good, "id": "empty", "text": "  "}),
        json.dumps({**good, "id": "long", "duration": 99.0}),
        json.dumps({**good, "id": "nodur", "duration": None}),
        json.dumps({k: v for k, v in good.items() if k != "audio"}),
        json.dumps({**good, "id": "ast", "task": "ast"}),
        json.dumps(good),  # duplicate id
        "",
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="mooer.data"):
        read = read_manifest(path, max_duration=30.0)
    assert [u.id for u in read.utterances] == ["ok"]
    assert read.skipped == Counter({"invalid JSON": 1, "missing file": 1, "empty text": 1, "too long": 1,
                                    "missing duration": 1, "missing audio": 1, "missing translation": 1,
                                    "duplicate id": 1})
    assert len([r for r in caplog.records if "skipped 8 of 9" in r.getMessage()]) == 1
    assert read_manifest(path, require_translation=True).utterances == []


def test_utterance_audio_resampled_downmixed_and_segmented(corpus: list[Utterance]) -> None:
    stereo = corpus[2].load_audio()
    assert stereo.ndim == 1 and stereo.shape[0] == pytest.approx(0.8 * SR, abs=2)  # 8 kHz stereo → 16 kHz mono
    segment = corpus[3].load_audio()
    whole = sf.read(corpus[3].audio, dtype="float32")[0]
    np.testing.assert_array_equal(segment, whole[SR : int(2.5 * SR)])


# ---------------------------------------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------------------------------------


def skewed_durations(n: int = 300, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.concatenate([rng.uniform(0.5, 3, n // 2), rng.uniform(3, 20, n - n // 2)]))


def test_dynamic_sampler_budget_and_coverage() -> None:
    durations = skewed_durations()
    sampler = DynamicBucketSampler(durations, max_seconds=40.0, max_utterances=12, seed=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(sum(durations[i] for i in b) <= 40.0 and len(b) <= 12 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(len(durations)))


def test_samplers_deterministic_per_seed_and_epoch() -> None:
    durations = skewed_durations()

    def run(cls_kwargs, epoch):
        s = make(**cls_kwargs)
        s.set_epoch(epoch)
        return list(s)

    def make(kind, seed):
        if kind == "dyn":
            return DynamicBucketSampler(durations, max_seconds=30.0, seed=seed)
        return FixedSizeSampler(len(durations), 8, seed=seed)

    for kind in ("dyn", "fixed"):
        assert run({"kind": kind, "seed": 1}, 0) == run({"kind": kind, "seed": 1}, 0)
        assert run({"kind": kind, "seed": 1}, 0) != run({"kind": kind, "seed": 1}, 1)
        assert run({"kind": kind, "seed": 1}, 0) != run({"kind": kind, "seed": 2}, 0)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_equal_batch_counts_across_ranks(world_size: int, drop_last: bool) -> None:
    durations = skewed_durations(301)
    for make in (
        lambda r: DynamicBucketSampler(durations, max_seconds=37.0, rank=r, world_size=world_size,
                                       drop_last=drop_last),
        lambda r: FixedSizeSampler(len(durations), 7, rank=r, world_size=world_size, drop_last=drop_last),
    ):
        per_rank = [list(make(r)) for r in range(world_size)]
        assert len({len(b) for b in per_rank}) == 1
        assert all(len(make(r)) == len(per_rank[r]) for r in range(world_size))
        seen = [i for batches in per_rank for b in batches for i in b]
        if not drop_last:
            assert set(seen) == set(range(len(durations)))  # every utterance, a few twice (padding)


@pytest.mark.parametrize("kind", ["dyn", "fixed"])
def test_exact_resume_mid_epoch(kind: str) -> None:
    durations = skewed_durations()

    def make():
        if kind == "dyn":
            return DynamicBucketSampler(durations, max_seconds=30.0, seed=5, rank=1, world_size=2)
        return FixedSizeSampler(len(durations), 8, seed=5, rank=1, world_size=2)

    reference = make()
    reference.set_epoch(2)
    expected = list(reference)

    first = make()
    first.set_epoch(2)
    it = iter(first)
    taken = [next(it) for _ in range(4)]
    state = json.loads(json.dumps(first.state_dict()))  # must survive serialisation
    assert state["epoch"] == 2 and state["batches_yielded"] == 4

    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the trainer's loop calls it again: the loaded position is kept
    assert taken + list(resumed) == expected
    resumed.set_epoch(3)
    assert len(list(resumed)) == len(resumed)

    # with prefetching, the loop reports what it consumed (here 2 of the 4 the sampler handed out)
    again = make()
    again.load_state_dict(first.state_dict(batches_consumed=2))
    assert expected[:2] + list(again) == expected


def test_resume_rejects_other_configuration() -> None:
    state = FixedSizeSampler(10, 2, world_size=2).state_dict()
    with pytest.raises(ValueError, match="world_size"):
        FixedSizeSampler(10, 2).load_state_dict(state)


def test_bucketing_pads_less_than_fixed_size() -> None:
    durations = skewed_durations()
    dyn = DynamicBucketSampler(durations, max_seconds=60.0, seed=0)
    fixed = FixedSizeSampler(len(durations), len(durations) // len(dyn), seed=0)

    def mean_padding(sampler):
        return float(np.mean([padding_fraction([durations[i] for i in b]) for b in sampler]))

    assert mean_padding(dyn) < 0.5 * mean_padding(fixed)
    assert padding_fraction([2, 2]) == 0.0
    assert padding_fraction([1, 3]) == pytest.approx(1 / 3)
    assert padding_fraction([]) == 0.0


# ---------------------------------------------------------------------------------------------------------
# dataset + collate
# ---------------------------------------------------------------------------------------------------------


def test_task_mix_deterministic_and_respects_missing_translation(corpus: list[Utterance]) -> None:
    mix = TaskMix({"asr": 1, "ast": 1, "asr_ast": 1})
    with_tr = corpus[0]
    draws = [mix.choose(with_tr, seed=0, epoch=e) for e in range(60)]
    assert draws == [mix.choose(with_tr, seed=0, epoch=e) for e in range(60)]
    assert set(draws) == {"asr", "ast", "asr_ast"}
    assert {mix.choose(corpus[2], epoch=e) for e in range(20)} == {"asr"}  # no translation
    forced = Utterance(**{**with_tr.__dict__, "task": "ast"})
    assert {mix.choose(forced, epoch=e) for e in range(20)} == {"ast"}
    assert TaskMix({"ast": 1}).choose(with_tr) == "ast"
    assert mix.target(with_tr, "asr_ast") == "你好 世界\nhello world"
    assert TaskMix(separator=" | ").target(with_tr, "asr_ast") == "你好 世界 | hello world"
    with pytest.raises(ValueError):
        TaskMix({"s2s": 1})


def test_dataset_and_collate_layout(corpus, extractor, prompts, tokenizer) -> None:
    ds = SpeechDataset(corpus, extractor, prompts, TaskMix({"asr_ast": 1}))
    samples = [ds[i] for i in range(len(ds))]
    assert [s.task for s in samples] == ["asr_ast", "asr_ast", "asr", "asr"]
    a = samples[0]
    assert a.features.shape[1] == 560 and a.audio_len == a.features.shape[0] // 2
    assert a.answer_ids == prompts.answer_ids("你好 世界\nhello world")
    assert a.answer_ids[-1] == tokenizer.eos_token_id
    assert a.prompt_ids == prompts.prompt_ids("asr_ast")
    assert samples[2].features.shape[0] == extractor.num_frames(int(0.8 * SR))  # resampled 8 kHz stereo

    batch = collate(samples + [None], pad_id=prompts.pad_id)
    assert batch.num_skipped == 1 and len(batch) == 4
    expected = collate_tokens([s.audio_len for s in samples], [s.prompt_ids for s in samples],
                              prompts.pad_id, [s.answer_ids for s in samples])
    for name in ("input_ids", "attention_mask", "modality_mask", "labels"):
        assert torch.equal(getattr(batch.tokens, name), getattr(expected, name))
    labels = batch.tokens.labels
    for row, s in zip(labels, samples):
        assert row[row != IGNORE_INDEX].tolist() == s.answer_ids  # answer tokens + eos only
    assert batch.num_answer_tokens == int((labels != IGNORE_INDEX).sum())
    assert batch.features.shape == (4, max(s.features.shape[0] for s in samples), 560)
    assert batch.lengths.tolist() == [s.features.shape[0] for s in samples]
    short = int(batch.lengths.argmin())
    assert torch.all(batch.features[short, batch.lengths[short]:] == 0.0)
    assert batch.padding_fraction == pytest.approx(padding_fraction(batch.lengths.tolist()))
    assert batch.to("cpu").tokens.labels is not None
    assert collate([None, None], pad_id=prompts.pad_id) is None


def test_dataset_bad_items_are_none_and_counted(tmp_path, corpus, extractor, prompts) -> None:
    write_wav(tmp_path / "tiny.wav", 0.05)
    bad = [
        Utterance("gone", str(tmp_path / "nope.wav"), "x", 1.0),
        Utterance("tiny", str(tmp_path / "tiny.wav"), "x", 0.05),  # < 1 audio token
        Utterance("long", corpus[0].audio, "很长" * 50, 1.0),
    ]
    ds = SpeechDataset(bad, extractor, prompts, max_answer_tokens=20)
    assert [ds[i] for i in range(3)] == [None, None, None]
    assert ds.skipped == Counter({"unreadable audio": 1, "too short": 1, "answer too long": 1})


def test_dataloader_with_two_workers(corpus, extractor, prompts) -> None:
    ds = SpeechDataset(corpus, extractor, prompts, TaskMix({"asr": 1, "ast": 1}), seed=1)
    sampler = DynamicBucketSampler(ds.durations, max_seconds=2.0, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate_fn, num_workers=2)
    batches = list(loader)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b.ids) == ["a", "b", "c", "d"]
    by_id = {i: t for b in batches for i, t in zip(b.ids, b.tasks)}
    assert by_id == {u.id: ds.task_of(k) for k, u in enumerate(corpus)}
