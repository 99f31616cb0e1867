"""Tests of the synthetic recipe's corpus (stage 1) and tokenizer (stage 2) scripts.

These need the Debian packages espeak-ng, flite and sox (CI installs them). They fail, not skip, when the
tools are missing, so a broken CI image is noticed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import soundfile as sf

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic"


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RECIPE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # make_tokenizer imports make_corpus by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus() -> ModuleType:
    return _load("make_corpus")


@pytest.fixture(scope="module")
def tokenizer_script() -> ModuleType:
    return _load("make_tokenizer")


@pytest.fixture(scope="module")
def tts_tools() -> None:
    missing = [t for t in ("espeak-ng", "flite", "sox") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"the synthetic recipe needs {missing}: sudo apt-get install -y espeak-ng flite sox")
    try:
        import pypinyin  # noqa: F401
    except ImportError:
        pytest.fail("the synthetic recipe needs pypinyin: pip install pypinyin (or pip install mooer[recipe])")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------- split
def test_split_is_deterministic_disjoint_and_order_free(corpus: ModuleType) -> None:
    pairs = corpus.read_pairs(corpus.DEFAULT_SENTENCES)
    assert len(pairs) > 9000
    a = corpus.split_pairs(pairs)
    b = corpus.split_pairs(pairs)
    assert {s: [p.index for p in ps] for s, ps in a.items()} == {s: [p.index for p in ps] for s, ps in b.items()}
    assert sum(len(ps) for ps in a.values()) == len(pairs)

    # shuffling the list must not move any pair to another split
    shuffled = corpus.split_pairs(list(reversed(pairs)))
    assignment = {p.index: s for s, ps in a.items() for p in ps}
    assert all(assignment[p.index] == s for s, ps in shuffled.items() for p in ps)

    # no Chinese or English sentence (raw or normalised) in two splits
    for key in (lambda p: p.zh, lambda p: p.en, lambda p: corpus.zh_key(p.zh), lambda p: corpus.en_key(p.en)):
        owner: dict[str, str] = {}
        for split, ps in a.items():
            for p in ps:
                assert owner.setdefault(key(p), split) == split, f"{key(p)!r} is in {owner[key(p)]} and {split}"

    n = len(pairs)
    assert 0.87 * n < len(a["train"]) < 0.93 * n
    assert 0.03 * n < len(a["dev"]) < 0.07 * n and 0.03 * n < len(a["test"]) < 0.07 * n


def test_pinyin_conversion(corpus: ModuleType) -> None:
    assert corpus.to_pinyin("鉴定故障") == "jian4 ding4 gu4 zhang4."
    assert corpus.to_pinyin("我的") == "wo3 de5."  # the neutral tone gets an explicit 5
    assert corpus.to_pinyin("女儿") == "nv3 er2."
    assert corpus.to_pinyin("您必须立即更改密码（管理员强制）。") == (
        "nin2 bi4 xu1 li4 ji2 geng1 gai3 mi4 ma3, guan3 li3 yuan2 qiang2 zhi4.")
    assert corpus.to_pinyin("未提供密码。请重试！") .startswith("wei4 ti2 gong1 mi4 ma3. qing3")


# -------------------------------------------------------------------------------------------- corpus
def test_corpus_stage_builds_valid_audio_and_manifests(corpus: ModuleType, tts_tools: None, tmp_path: Path) -> None:
    out = tmp_path / "data"
    stats = corpus.build_corpus(out, limit=6, jobs=1, progress=False)
    pairs = corpus.read_pairs(corpus.DEFAULT_SENTENCES)[:6]

    records = {s: _read_jsonl(out / f"{s}.jsonl") for s in corpus.SPLITS}
    flat = [r for rs in records.values() for r in rs]
    assert len(flat) == 12
    assert {(r["lang"], r["text"]) for r in flat} == {("zh", p.zh) for p in pairs} | {("en", p.en) for p in pairs}
    assert sum(v["utterances"] for s in stats["splits"].values() for v in s.values()) == 12

    for split, rs in records.items():
        text = (out / split / "text").read_text(encoding="utf-8").splitlines()
        assert [line.split(" ", 1)[0] for line in text] == [r["id"] for r in rs]
        text_en = dict(line.split(" ", 1) for line in (out / split / "text.en").read_text(encoding="utf-8").splitlines())
        for r in rs:
            assert set(r) <= {"id", "audio", "duration", "text", "translation", "lang"}
            wav = out / r["audio"]
            assert not Path(r["audio"]).is_absolute() and wav.is_file()
            info = sf.info(str(wav))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            assert 0.3 < r["duration"] < 15.0
            assert r["duration"] == pytest.approx(info.frames / info.samplerate, abs=1e-3)
            audio, _ = sf.read(str(wav))
            assert abs(audio).max() > 0.05, f"{wav} is (nearly) silent"
            if r["lang"] == "zh":
                assert r["translation"] == next(p.en for p in pairs if p.zh == r["text"])
                assert text_en[r["id"]] == r["translation"]
            else:
                assert "translation" not in r and r["id"] not in text_en
        for lang in ("zh", "en"):
            ids = (out / f"{split}_{lang}" / "text").read_text(encoding="utf-8").split("\n")
            assert [i.split(" ", 1)[0] for i in ids if i] == [r["id"] for r in rs if r["lang"] == lang]

    # resumable: a second run keeps every wav and writes the same manifests
    before = {r["id"]: (out / r["audio"]).stat().st_mtime_ns for r in flat}
    manifests = {s: (out / f"{s}.jsonl").read_text(encoding="utf-8") for s in corpus.SPLITS}
    corpus.build_corpus(out, limit=6, jobs=1, progress=False)
    assert {r["id"]: (out / r["audio"]).stat().st_mtime_ns for r in flat} == before
    assert {s: (out / f"{s}.jsonl").read_text(encoding="utf-8") for s in corpus.SPLITS} == manifests

    # deterministic: a fresh build (two workers) gives the same audio, bit for bit
    out2 = tmp_path / "data2"
    corpus.build_corpus(out2, limit=2, jobs=2, progress=False)
    for r in _read_jsonl(out2 / "train.jsonl") + _read_jsonl(out2 / "dev.jsonl") + _read_jsonl(out2 / "test.jsonl"):
        assert _md5(out2 / r["audio"]) == _md5(out / r["audio"])


def test_recipe_stage1_more_renderings_keep_the_first(corpus: ModuleType, tts_tools: None, tmp_path: Path) -> None:
    """run.sh stage 1 with --renderings 2: twice the training audio, and its first-rendering manifest
    (what the recipe's early training runs use) is exactly the one-rendering corpus."""
    many, one = tmp_path / "many", tmp_path / "one"
    res = subprocess.run(
        ["bash", str(RECIPE / "run.sh"), "--stage", "1", "--stop-stage", "1", "--limit", "4", "--renderings", "2",
         "--jobs", "1", "--data", str(many)],
        capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
    )
    assert res.returncode == 0, res.stderr
    corpus.build_corpus(one, limit=4, jobs=1, progress=False)

    train = _read_jsonl(many / "train.jsonl")
    single = _read_jsonl(one / "train.jsonl")
    assert single and len(train) == 2 * len(single)
    assert {r["id"].rsplit("_", 1)[1] for r in train} == {"0", "1"}
    assert (many / "train_r0.jsonl").read_text(encoding="utf-8") == (one / "train.jsonl").read_text(encoding="utf-8")
    for r in single:  # the same audio, bit for bit
        assert _md5(many / r["audio"]) == _md5(one / r["audio"])
    # the second rendering is a different voice/speed/pitch, not a copy
    first = {r["id"][:-2]: r for r in train if r["id"].endswith("_0")}
    for r in (r for r in train if r["id"].endswith("_1")):
        assert r["text"] == first[r["id"][:-2]]["text"]
        assert _md5(many / r["audio"]) != _md5(many / first[r["id"][:-2]]["audio"])
    for split in ("dev", "test"):  # held-out splits keep one rendering
        assert (many / f"{split}.jsonl").read_text(encoding="utf-8") == (one / f"{split}.jsonl").read_text(encoding="utf-8")


def test_corpus_cli_help(corpus: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        corpus.main(["--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_stage_gives_a_qwen2_style_tokenizer(tokenizer_script: ModuleType, corpus: ModuleType,
                                                        tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    pairs = corpus.read_pairs(corpus.DEFAULT_SENTENCES)[:60]
    texts = [p.zh for p in pairs] + [p.en for p in pairs]
    out = tmp_path / "tok"
    stats = tokenizer_script.train_tokenizer(texts, out, vocab_size=600)
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= {f.name for f in out.iterdir()}

    tok = AutoTokenizer.from_pretrained(str(out))
    n = len(tok)
    assert n == stats["vocab_size"] <= 600
    assert [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [n - 3, n - 2, n - 1]
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == n - 1
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == n - 3
    assert tok.bos_token is None

    prompt = tok.apply_chat_template([{"role": "user", "content": "Transcribe speech to text. "}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt == tokenizer_script.PROMPT_TEMPLATE.format("Transcribe speech to text. ")
    ids = tok.encode(prompt, add_special_tokens=False)
    assert ids.count(n - 2) == 3 and ids.count(n - 1) == 2  # specials are single tokens, never split

    slow = AutoTokenizer.from_pretrained(str(out), use_fast=False)
    for t in texts:
        a = tok.encode(t, add_special_tokens=False)
        assert a == slow.encode(t, add_special_tokens=False)
        assert tok.decode(a) == t
    # and the full cross-check (fast / slow / vocab+merges only / pure-Python reference BPE)
    tokenizer_script.verify(out, texts)
    # no merge spans two Chinese characters
    assert stats["zh_runs_tokenised_char_by_char"] == 1.0
