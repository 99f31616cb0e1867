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


# ---------------------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------------------


def test_augmentation_only_when_enabled_and_deterministic(tmp_path, corpus, extractor, prompts) -> None:
    from mooer.data.augment import AugmentConfig, Augmenter

    assert not AugmentConfig().enabled
    plain = SpeechDataset(corpus, extractor, prompts, augment=AugmentConfig())
    assert plain.augment is None
    reference = plain[0].features

    write_wav(tmp_path / "noise.wav", 0.3, freq=50)
    (tmp_path / "noise.jsonl").write_text(json.dumps(
        {"id": "n", "audio": "noise.wav", "duration": 0.3, "text": "noise"}) + "\n", encoding="utf-8")
    for config in (
        AugmentConfig(speed_perturb=[0.9, 1.1]),
        AugmentConfig(noise_prob=1.0, snr_db=(5, 10)),
        AugmentConfig(noise_prob=1.0, noise_manifest=str(tmp_path / "noise.jsonl")),
        AugmentConfig(time_masks=2, time_mask_width=3, freq_masks=2, freq_mask_width=8),
    ):
        assert config.enabled
        ds = SpeechDataset(corpus, extractor, prompts, augment=config, seed=4)
        first = ds[0].features
        assert not torch.equal(first, reference)
        assert torch.equal(SpeechDataset(corpus, extractor, prompts, augment=config, seed=4)[0].features, first)
        epochs = set()
        for epoch in range(4):
            ds.set_epoch(epoch)
            epochs.add(tuple(ds[0].features.flatten()[:50].tolist()) + (ds[0].features.shape[0],))
        assert len(epochs) > 1  # draws differ between epochs

    aug = Augmenter(AugmentConfig(speed_perturb=[1.1]))
    wave = corpus[0].load_audio()
    assert aug.waveform(wave, key="a", epoch=0).shape[0] == pytest.approx(wave.shape[0] / 1.1, abs=2)
    masked = Augmenter(AugmentConfig(freq_masks=1, freq_mask_width=80)).features(reference, key="x", epoch=0)
    zero_bins = (masked.view(masked.shape[0], 7, 80) == 0).all(dim=0)  # same bins in all 7 stacked frames
    assert torch.equal(zero_bins[0], zero_bins[6]) and torch.equal(reference, plain[0].features)
    assert AugmentConfig.from_dict({"snr_db": [0, 5], "noise_prob": 0.5}).snr_db == (0, 5)


# ---------------------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------------------


def test_shards_pack_and_read_back(tmp_path, corpus) -> None:
    from mooer.data.prepare import pack
    from mooer.data.shards import index_shard, iter_shard_list, read_shard_list
    from mooer.audio import load_audio

    result, writer = pack(corpus, tmp_path / "shards", utts_per_shard=3)
    assert len(writer.shards) == 2 and not result.skipped
    assert read_shard_list(writer.list_path) == [str(p.resolve()) for p in writer.shards]
    assert [e.key for e in index_shard(writer.shards[0])[0]] == ["a", "b", "c"]

    packed = read_manifest(writer.manifest_path)
    assert [u.id for u in packed.utterances] == ["a", "b", "c", "d"]
    assert packed.utterances[0].audio == f"{writer.shards[0].resolve()}#a.wav"
    assert packed.utterances[0].translation == "hello world"
    for original, copy in zip(corpus, packed.utterances):
        assert copy.duration == pytest.approx(original.duration, abs=1e-3)
        np.testing.assert_array_equal(copy.load_audio(), original.load_audio())  # d: segment → 16-bit WAV

    streamed = list(iter_shard_list(writer.list_path))
    assert [(s.key, s.text) for s in streamed] == [(u.id, u.text) for u in corpus]
    for item, original in zip(streamed, corpus):
        np.testing.assert_array_equal(load_audio(item.audio), original.load_audio())


@pytest.mark.parametrize("world_size,num_workers", [(2, 1), (3, 1), (2, 2)])
def test_streaming_reader_splits_by_utterance_count(tmp_path, world_size, num_workers) -> None:
    from mooer.data.shard_writer import ShardWriter
    from mooer.data.shards import iter_shard_list

    write_wav(tmp_path / "x.wav", 0.2)
    with ShardWriter(tmp_path / "s", utts_per_shard=4) as writer:  # shards of 4, 4 and 3 utterances
        for i in range(11):
            writer.add(Utterance(f"u{i:02d}", str(tmp_path / "x.wav"), f"t{i}", 0.2))
    parts = [[item.key for item in iter_shard_list(writer.list_path, rank, world_size, worker, num_workers)]
             for rank in range(world_size) for worker in range(num_workers)]
    assert len({len(p) for p in parts}) == 1  # the same amount of work everywhere
    assert {k for p in parts for k in p} == {f"u{i:02d}" for i in range(11)}
    shuffled = [item.key for item in iter_shard_list(writer.list_path, shuffle=True, epoch=1)]
    assert sorted(shuffled) == [f"u{i:02d}" for i in range(11)]  # tar order shuffled, each utterance once


def test_shard_invalid_groups_skipped_last_included(tmp_path) -> None:
    import io
    import tarfile

    from mooer.data.prepare import prepare_shards
    from mooer.data.shards import iter_shard_list

    wav = io.BytesIO()
    sf.write(wav, np.zeros(3200, np.float32), SR, format="WAV", subtype="PCM_16")
    tar_path = tmp_path / "shard.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, data in [("a.txt", "你好\u2581WORLD".encode()), ("a.wav", wav.getvalue()),
                           ("b.wav", wav.getvalue()),  # no text
                           ("c.txt", b"  "), ("c.wav", wav.getvalue()),  # empty text
                           ("d.txt", b"last")]:  # last group, no audio (15.42)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "data.list").write_text("shard.tar\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("a hello world\n", encoding="utf-8")
    result = prepare_shards(tmp_path / "data.list", translation=tmp_path / "en.txt")
    assert [(u.id, u.text, u.translation) for u in result.utterances] == [("a", "你好 WORLD", "hello world")]
    assert result.utterances[0].duration == pytest.approx(0.2)
    assert result.skipped == Counter({"invalid group": 2, "empty text": 1})
    assert [i.key for i in iter_shard_list(tmp_path / "data.list")] == ["a", "c"]
    (tmp_path / "remote.list").write_text("https://example.com/a.tar\n", encoding="utf-8")
    with pytest.raises(OSError, match="only local"):
        list(iter_shard_list(tmp_path / "remote.list"))


# ---------------------------------------------------------------------------------------------------------
# importers and CLI
# ---------------------------------------------------------------------------------------------------------


def kaldi_dir(tmp_path: Path) -> Path:
    data = tmp_path / "kaldi"
    (data / "wav").mkdir(parents=True)
    write_wav(data / "wav" / "r1.wav", 2.0, freq=200)
    write_wav(data / "wav" / "r2.wav", 1.0, sr=22050, channels=2, freq=400)
    (data / "wav" / "broken.wav").write_bytes(b"not audio at all")
    (data / "wav.scp").write_text(
        "r1 wav/r1.wav\nr2 wav/r2.wav\nr3 wav/broken.wav\nr4 sox x.wav -t wav - |\nr5 wav/absent.wav\n",
        encoding="utf-8")
    (data / "segments").write_text(
        "s1 r1 0.0 1.2\ns2 r1 1.2 -1\ns3 r2 0.1 0.9\ns4 r3 0 1\ns5 r4 0 1\ns6 r1 1.5 1.5\ns7 r5 0 1\n",
        encoding="utf-8")
    (data / "text").write_text(
        "s1 你好\u2581WORLD\ns2 第二段\ns3 第三\ns4 坏\ns5 管道\ns6 空段\ns7 不存在\ns8 无音频\ns9\n",
        encoding="utf-8")
    (data / "text.en").write_text("s1 hello world\ns3 third\n", encoding="utf-8")
    return data


def test_prepare_kaldi(tmp_path) -> None:
    from mooer.data.prepare import prepare_kaldi

    data = kaldi_dir(tmp_path)
    result = prepare_kaldi(data, translation=data / "text.en")
    assert [(u.id, u.text, u.translation) for u in result.utterances] == [
        ("s1", "你好 WORLD", "hello world"), ("s2", "第二段", None), ("s3", "第三", "third")]
    s1, s2, s3 = result.utterances
    assert (s1.start, s1.end, s1.duration) == (0.0, 1.2, pytest.approx(1.2))
    assert s2.end == pytest.approx(2.0) and s2.duration == pytest.approx(0.8)  # -1 = to the end
    assert s3.audio == str(data / "wav" / "r2.wav")
    assert s3.load_audio().shape[0] == pytest.approx(0.8 * SR, abs=2)
    assert result.skipped == Counter({"piped wav.scp command": 1, "unreadable audio": 2, "no audio entry": 1,
                                      "no segment": 1, "empty segment": 1, "empty text": 1})

    (data / "segments").unlink()  # utterances = recordings
    (data / "text").write_text("r2 第二\nr1 整段\n", encoding="utf-8")
    whole = prepare_kaldi(data)
    assert [(u.id, u.start, u.duration) for u in whole.utterances] == [
        ("r2", None, pytest.approx(1.0)), ("r1", None, pytest.approx(2.0))]
    assert whole.skipped == Counter({"piped wav.scp command": 1, "no text": 2})  # r3, r5 have no transcript


def test_cli_prepare(tmp_path, capsys) -> None:
    from mooer.cli import main

    data = kaldi_dir(tmp_path)
    out = tmp_path / "train.jsonl"
    assert main(["prepare", "kaldi", str(data), "--out", str(out), "--translation", str(data / "text.en")]) == 0
    assert "3 utterances" in capsys.readouterr().err
    assert [u.id for u in read_manifest(out).utterances] == ["s1", "s2", "s3"]
    assert main(["prepare", "pack", str(out), "--out", str(tmp_path / "packed"), "--utts-per-shard", "2"]) == 0
    assert "2 shards" in capsys.readouterr().err
    again = tmp_path / "again.jsonl"
    assert main(["prepare", "shards", str(tmp_path / "packed" / "data.list"), "--out", str(again)]) == 0
    assert [u.text for u in read_manifest(again).utterances] == ["你好 WORLD", "第二段", "第三"]
    assert main(["prepare", "kaldi", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.jsonl")]) == 1


def test_dataloader_resume_with_prefetching_workers(corpus, extractor, prompts) -> None:
    ds = SpeechDataset(corpus * 3, extractor, prompts)

    def loader(sampler):
        return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate_fn, num_workers=2)

    def make():
        return FixedSizeSampler(len(ds), 2, seed=7)

    full = [b.ids for b in loader(make())]
    first = make()
    it = iter(loader(first))
    taken = [next(it).ids for _ in range(2)]  # the workers have prefetched more than 2 batches by now
    state = first.state_dict(batches_consumed=2)
    del it
    resumed = make()
    resumed.load_state_dict(state)
    assert taken + [b.ids for b in loader(resumed)] == full
