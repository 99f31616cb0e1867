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
    # the default --extra lists: one rendering of the first four pairs of each; the last runs' manifests add
    # the first list (train_more.jsonl), then the first two (train_more2.jsonl), then all three (train_more3)
    lists = (("train_extra", "extra_sentences.tsv"), ("train_extra2", "extra_sentences2.tsv"),
             ("train_extra3", "extra_sentences3.tsv"))
    for name, tsv in lists:
        extra = _read_jsonl(many / f"{name}.jsonl")
        assert [r["text"] for r in extra if r["lang"] == "en"] == [p.en for p in corpus.read_pairs(RECIPE / tsv)[:4]]
        assert all(r["audio"].startswith(f"wav/{name}/") for r in extra)
    text = {name: (many / f"{name}.jsonl").read_text(encoding="utf-8")
            for name in ("train", "train_extra", "train_extra2", "train_extra3", "train_more", "train_more2",
                         "train_more3")}
    assert text["train_more"] == text["train"] + text["train_extra"]
    assert text["train_more2"] == text["train"] + text["train_extra"] + text["train_extra2"]
    assert text["train_more3"] == text["train"] + text["train_extra"] + text["train_extra2"] + text["train_extra3"]
    assert not (many / "train_more.part").exists()


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


# ----------------------------------------------------------------------- more training sentences
@pytest.fixture(scope="module")
def collector() -> ModuleType:
    return _load("collect_sentences")


def _po(entries: list[tuple[str | None, str, str]]) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    out = ['msgid ""', 'msgstr "Content-Type: text/plain; charset=UTF-8\\n"', ""]
    for ctx, en, zh in entries:
        out += ([f"msgctxt {q(ctx)}"] if ctx else []) + [f"msgid {q(en)}", f"msgstr {q(zh)}", ""]
    return "\n".join(out)


def _msgfmt(po_text: str, mo: Path) -> None:
    if shutil.which("msgfmt") is None:
        pytest.fail("this test needs msgfmt: apt-get install -y gettext")
    mo.parent.mkdir(parents=True, exist_ok=True)
    po = mo.with_suffix(".po")
    po.write_text(po_text, encoding="utf-8")
    subprocess.run(["msgfmt", "-o", str(mo), str(po)], check=True)
    po.unlink()


def test_collect_sentences_filters_dedups_and_never_takes_a_known_sentence(
    collector: ModuleType, corpus: ModuleType, tmp_path: Path
) -> None:
    known = corpus.read_pairs(corpus.DEFAULT_SENTENCES)[0]  # 鉴定故障 / Authentication failure
    lc = "usr/share/locale/zh_CN/LC_MESSAGES"
    _msgfmt(_po([
        (None, "Disk is full", "磁盘已满"),                              # kept
        ("menu", "Open the recent file", "打开最近的文件"),                # kept, context dropped
        (None, "Saved all open documents.", "已保存所有打开的文档。"),        # kept, punctuation allowed
        (None, "Open", "打开"),                                          # one English word
        (None, "%s files copied", "已复制 %s 个文件"),                      # format specifier
        (None, "_Open file", "打开文件(_O)"),                             # accelerator
        (None, "Use the SSL library", "使用 SSL 库"),                     # Latin letters in the Chinese
        (None, "Line one\nline two", "第一行\n第二行"),                     # multi-line
        (None, "Delete the file", ""),                                   # untranslated
        (None, known.en.upper(), "认证失败了"),                            # English of a known sentence
        (None, "Identification fault here", known.zh),                   # Chinese of a known sentence
        (None, "A very long message", "长" * 41),                         # Chinese over 40 characters
    ]), tmp_path / "a" / lc / "alpha.mo")
    _msgfmt(_po([
        (None, "Disk is full", "磁盘满了"),                               # duplicate English: alpha wins
        (None, "Network is down", "网络已断开"),                          # kept
        (None, "Connection lost", "网络已断开"),                          # duplicate Chinese: dropped
    ]), tmp_path / "b" / lc / "beta.mo")

    rows = collector.collect([tmp_path / "a", tmp_path / "b"], [corpus.DEFAULT_SENTENCES])
    assert rows == [
        ("alpha", "已保存所有打开的文档。", "Saved all open documents."),
        ("alpha", "打开最近的文件", "Open the recent file"),
        ("alpha", "磁盘已满", "Disk is full"),
        ("beta", "网络已断开", "Connection lost"),
    ]
    # order of the sources does not matter; a subset is a stable choice among the rows
    assert collector.collect([tmp_path / "b", tmp_path / "a"], [corpus.DEFAULT_SENTENCES]) == rows
    two = collector.collect([tmp_path / "a", tmp_path / "b"], [corpus.DEFAULT_SENTENCES], max_pairs=2)
    assert len(two) == 2 and set(two) < set(rows) and two == sorted(two)
    assert collector.collect([tmp_path / "b", tmp_path / "a"], [corpus.DEFAULT_SENTENCES], max_pairs=2) == two
    # excluding that subset as well (--exclude LIST LIST) gives the rest: the next pairs by the same hash
    taken = tmp_path / "two.tsv"
    taken.write_text("".join("\t".join(r) + "\n" for r in two), encoding="utf-8")
    rest = collector.collect([tmp_path / "a", tmp_path / "b"], [corpus.DEFAULT_SENTENCES, taken])
    assert sorted(rest + two) == rows
    assert collector.collect([tmp_path / "a", tmp_path / "b"], [corpus.DEFAULT_SENTENCES, taken], max_pairs=1) == [
        min(rest, key=lambda r: hashlib.sha256(collector.en_key(r[2]).encode("utf-8")).digest())
    ]

    # a .deb holding the catalogue gives the same pairs as the unpacked tree
    pkg = tmp_path / "pkg"
    shutil.copytree(tmp_path / "a", pkg)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        "Package: alpha\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(tmp_path / "alpha.deb")],
                   check=True, capture_output=True)
    assert collector.collect([tmp_path / "alpha.deb", tmp_path / "b"], [corpus.DEFAULT_SENTENCES]) == rows

    assert collector.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "x.tsv")]) == 0
    assert [tuple(line.split("\t")) for line in (tmp_path / "x.tsv").read_text(encoding="utf-8").splitlines()] == rows


def test_extra_training_pairs_go_to_train_extra_only(corpus: ModuleType, tts_tools: None, tmp_path: Path) -> None:
    """--extra-train: one rendering per pair in train_extra.jsonl; a pair sharing a sentence with dev or
    test is dropped; train/dev/test are exactly what they are without extra pairs."""
    pairs = corpus.read_pairs(corpus.DEFAULT_SENTENCES)
    test_pair = corpus.split_pairs(pairs)["test"][0]
    extra = tmp_path / "extra.tsv"
    extra.write_text(
        "alpha\t磁盘已满\tDisk is full\n"
        f"alpha\t测试句子不能用\t{test_pair.en.lower()}\n"  # the English of a test sentence
        "beta\t网络已断开\tNetwork is down\n",
        encoding="utf-8",
    )
    out = tmp_path / "data"
    corpus.build_corpus(out, limit=3, jobs=1, progress=False)
    before = {s: (out / f"{s}.jsonl").read_text(encoding="utf-8") for s in corpus.SPLITS}
    stats = corpus.build_corpus(out, limit=3, jobs=1, progress=False, extra_train=[extra])
    assert {s: (out / f"{s}.jsonl").read_text(encoding="utf-8") for s in corpus.SPLITS} == before
    assert stats["extra_dropped_as_held_out"] == 1 and stats["pairs"]["train_extra"] == 2

    records = _read_jsonl(out / "train_extra.jsonl")
    assert [(r["lang"], r["text"], r.get("translation")) for r in records] == [
        ("zh", "磁盘已满", "Disk is full"), ("en", "Disk is full", None),
        ("zh", "网络已断开", "Network is down"), ("en", "Network is down", None),
    ]
    for r in records:
        assert r["id"].endswith("_0") and r["audio"].startswith("wav/train_extra/")
        assert sf.info(str(out / r["audio"])).samplerate == 16000
    assert (out / "train_extra_zh" / "text.en").read_text(encoding="utf-8").splitlines() == [
        f"{records[0]['id']} Disk is full", f"{records[2]['id']} Network is down",
    ]

    # a second list: its own split (train_extra2); a pair already in the first list is not synthesised twice;
    # the first list's manifest and audio stay as they were
    extra2 = tmp_path / "extra2.tsv"
    extra2.write_text("gamma\t文件已保存\tFile saved\nalpha\t磁盘已满\tDisk is full\n", encoding="utf-8")
    first = (out / "train_extra.jsonl").read_text(encoding="utf-8")
    audio = {r["id"]: _md5(out / r["audio"]) for r in records}
    stats = corpus.build_corpus(out, limit=3, jobs=1, progress=False, extra_train=[extra, extra2])
    assert stats["pairs"]["train_extra2"] == 2 and stats["extra_dropped_as_held_out"] == 1
    assert (out / "train_extra.jsonl").read_text(encoding="utf-8") == first
    assert {r["id"]: _md5(out / r["audio"]) for r in records} == audio
    assert {s: (out / f"{s}.jsonl").read_text(encoding="utf-8") for s in corpus.SPLITS} == before
    records2 = _read_jsonl(out / "train_extra2.jsonl")
    assert [(r["lang"], r["text"]) for r in records2] == [("zh", "文件已保存"), ("en", "File saved")]
    assert all(r["audio"].startswith("wav/train_extra2/") for r in records2)


# ------------------------------------------------------------------------------------------ hotwords
def test_only_builds_the_named_split(corpus: ModuleType, tts_tools: None, tmp_path: Path) -> None:
    out = tmp_path / "data"
    pairs = corpus.read_pairs(corpus.DEFAULT_SENTENCES)
    test_pairs = corpus.split_pairs(pairs)["test"][:2]
    # a list holding two test pairs and one training pair: only the test ones are synthesised
    (tmp_path / "s.tsv").write_text("".join(f"{p.domain}\t{p.zh}\t{p.en}\n" for p in test_pairs)
                                    + "x\t训练\ttraining\n", encoding="utf-8")
    sentences = corpus.split_pairs(corpus.read_pairs(tmp_path / "s.tsv"))
    assert sum(len(v) for v in sentences.values()) == 3
    stats = corpus.build_corpus(out, tmp_path / "s.tsv", jobs=1, progress=False, only=["test"])
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["test.jsonl"]
    assert len(_read_jsonl(out / "test.jsonl")) == 2 * len(sentences["test"]) and set(stats["splits"]) == {"test"}
    with pytest.raises(ValueError, match="unknown split"):
        corpus.build_corpus(out, tmp_path / "s.tsv", jobs=1, progress=False, only=["eval"])


def test_hotword_set_file() -> None:
    hotwords = _load("make_hotword_set")
    rows = hotwords.read_set(hotwords.DEFAULT_SET)
    spoken = [r for r in rows if r["split"] != "unspoken"]
    assert len(rows) == 240 and len(spoken) == 160 and len({r["term"] for r in rows}) == 240
    for split in ("dev", "test"):
        for lang in ("zh", "en"):
            for category in hotwords.CATEGORIES:
                assert sum(1 for r in spoken if (r["split"], r["lang"], r["category"]) == (split, lang, category)) == 10
    terms = [r["term"] for r in rows]
    for r in spoken:  # each sentence speaks its own term and no other listed term
        assert [t for t in terms if t.lower() in r["sentence"].lower()] == [r["term"]], r
    counts, seen = hotwords.training_counts(rows)
    assert seen == [] and sum(1 for r in spoken if counts[r["term"]] == 0) > 100
