"""Pseudo-labelling (mooer.labelling, `mooer pseudo-label`, `mooer filter`) with the tiny fixture model and the
bundled demo model (which has a CTC head); the Ray runner is tested in test_labelling_ray.py."""

from __future__ import annotations

import json
import tarfile

import pytest
import torch

from fixtures_path import AUDIO, OFFICIAL_TINY
from mooer.errors import ConfigError
from mooer.inference.ctc_prefix import ctc_best_path
from mooer.labelling.evidence import disagreement, logprob_stats, speech_rate
from mooer.labelling.filter import Thresholds, apply_filter, combined_scores, write_outputs
from mooer.labelling.inputs import Item, read_inputs
from mooer.labelling.jobs import plan, read_labels, run_local, shard_path
from mooer.labelling.label import Labeller, TeacherSpec, featurise

TINY = str(OFFICIAL_TINY)


# ---------------------------------------------------------------------------------------------- pieces


def test_ctc_best_path_merges_repeats_and_drops_blanks():
    # classes 0..2, blank = 3; frames: 1 1 blank 1 2 2 blank blank | padding frames ignored
    best = [1, 1, 3, 1, 2, 2, 3, 3, 0, 0]
    log_probs = torch.full((2, 10, 4), -10.0)
    for t, c in enumerate(best):
        log_probs[0, t, c] = 0.0
        log_probs[1, t, 3 if t % 2 else 2] = 0.0
    assert ctc_best_path(log_probs, torch.tensor([8, 3])) == [[1, 1, 2], [2, 2]]
    assert ctc_best_path(log_probs)[0] == [1, 1, 2, 0]


def test_evidence_functions():
    assert logprob_stats([]) == (None, None)
    assert logprob_stats([-0.5, -1.5, 0.0]) == (round(-2 / 3, 4), -1.5)
    assert speech_rate("打开 文件。", 2.0) == (2.0, "char")
    assert speech_rate("Open the file", 1.5) == (2.0, "word")
    assert disagreement("打开文件", "打开文件") == 0.0
    assert disagreement("打开文件", "打开问件") == 25.0
    assert disagreement("Open the file", "open the FILE.") == 0.0  # normalised: case, punctuation
    assert disagreement("Open the file", "Open a file") == pytest.approx(33.33)
    assert disagreement("", "") == 0.0 and disagreement("", "两个") == 200.0


def test_teacher_spec_parsing():
    assert TeacherSpec.parse("default", 0) == TeacherSpec(name="t0")
    assert TeacherSpec.parse("/m/x", 3) == TeacherSpec(name="t3", model="/m/x")
    spec = TeacherSpec.parse("model=/m/x,task=asr_ast,preset=greedy,ctc_weight=0,beams=2,name=big", 1)
    assert spec == TeacherSpec("big", "/m/x", "asr_ast", "greedy", 0.0, 2)
    for bad in ("model=/m,colour=red", "task=sing", "beams=many"):
        with pytest.raises(ConfigError):
            TeacherSpec.parse(bad)
    with pytest.raises(ConfigError, match="transcript"):  # checked before any model loads
        plan([Item("a", "/a.wav")], "/nonexistent/never", [TeacherSpec.parse("task=ast")], block_size=1)
    with pytest.raises(ConfigError, match="differ"):
        plan([Item("a", "/a.wav")], "/nonexistent/never", [TeacherSpec("x"), TeacherSpec("x")], block_size=1)


def test_read_inputs_from_every_kind_of_source(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a {AUDIO / 'zh1.wav'}\nb {AUDIO / 'en1.wav'}\n", encoding="utf-8")
    manifest = tmp_path / "m.jsonl"  # no text: unlabelled
    manifest.write_text(json.dumps({"id": "c", "audio": str(AUDIO / "zh2.wav"), "start": 0.5, "end": 2.0,
                                    "lang": "zh"}) + "\n", encoding="utf-8")
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(AUDIO / "zh1.wav", arcname="d.wav")
        tar.add(AUDIO / "transcripts.tsv", arcname="d.txt")  # text members are ignored
    folder = tmp_path / "dir" / "sub"
    folder.mkdir(parents=True)
    (folder / "e.wav").write_bytes((AUDIO / "en1.wav").read_bytes())
    items = read_inputs([str(manifest), str(shard), str(tmp_path / "dir")], str(scp))
    assert [i.key for i in items] == ["c", "d", "sub_e", "a", "b"]
    assert items[0] == Item("c", str(AUDIO / "zh2.wav"), 0.5, 2.0, "zh")
    assert items[1].audio == f"{shard}#d.wav"
    rows = [featurise(i) for i in items[:2]]
    assert rows[0]["duration"] == 1.5 and rows[0]["lfr"].shape[1] == 560
    assert rows[1]["duration"] == pytest.approx(3.081, abs=1e-3)  # read from inside the tar
    with pytest.raises(ConfigError, match="twice"):
        read_inputs([str(tmp_path / "dir"), str(tmp_path / "dir")])
    with pytest.raises(ConfigError, match="no input"):
        read_inputs([])


# ---------------------------------------------------------------------------------------------- labelling


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    clips = ["zh1", "en1", "zh2", "demo", "short"]
    lines = [f"k{i}_{c} {AUDIO / (c + '.wav')}" for i, c in enumerate(clips)]
    lines.append(f"broken {root / 'missing.wav'}")
    scp = root / "wav.scp"
    scp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return scp


TEACHERS = [f"model={TINY},task=asr_ast,preset=greedy,name=mtl", f"model={TINY},task=asr,preset=greedy,beams=2"]


def test_labeller_records_text_translation_and_evidence(pool):
    items = read_inputs([], str(pool))
    labeller = Labeller([TeacherSpec.parse(t, i) for i, t in enumerate(TEACHERS)], device="cpu", batch_size=2)
    records = labeller.label([featurise(i) for i in items])
    by_key = {r["key"]: r for r in records}
    assert list(by_key) == [i.key for i in items]
    assert "error" in by_key["broken"] and "teachers" not in by_key["broken"]
    good = by_key["k0_zh1"]
    mtl, asr = good["teachers"]
    assert (mtl["name"], mtl["task"], asr["name"], asr["task"]) == ("mtl", "asr_ast", "t1", "asr")
    assert good["text"] == mtl["text"] and good["translation"] == mtl["translation"]
    assert "translation" not in asr and "ctc_cer" not in mtl  # no CTC head on the tiny model
    assert good["teacher_cer"] == disagreement(mtl["text"], asr["text"])
    assert mtl["mean_logprob"] <= 0 and mtl["min_logprob"] <= mtl["mean_logprob"]
    assert good["duration"] == pytest.approx(3.081, abs=1e-3)
    assert mtl["rate"] == speech_rate(mtl["text"], good["duration"])[0]
    assert isinstance(mtl["guard_ok"], bool) and mtl["compression_ratio"] > 0
    # the same model decoding alone gives the same transcript: nothing leaks between teachers or rows
    alone = Labeller([TeacherSpec.parse(TEACHERS[1], 1)], device="cpu", batch_size=1)
    assert alone.label([featurise(items[0])])[0]["text"] == asr["text"]


def test_ctc_agreement_with_the_bundled_model(tmp_path):
    """The demo model has a CTC head: its greedy transcript and its disagreement with the LLM are recorded."""
    from mooer.assets import default_model_path

    path = default_model_path().parent / "sample_zh.wav"
    labeller = Labeller([TeacherSpec.parse("default")], device="cpu")
    record = labeller.label([featurise(Item("s", str(path)))])[0]
    teacher = record["teachers"][0]
    assert teacher["ctc_text"] and teacher["ctc_cer"] == disagreement(teacher["text"], teacher["ctc_text"])
    assert teacher["ctc_cer"] < 50  # the demo model reads its own sample
    assert record["lang"] == "zh" and teacher["rate_unit"] == "char"


def test_local_job_resumes_and_writes_every_key_once(pool, tmp_path):
    items = read_inputs([], str(pool))
    specs = [TeacherSpec.parse(TEACHERS[1], 0)]
    out = tmp_path / "labels"
    first = run_local(items, out, specs, block_size=2, device="cpu", log=None)
    assert (first.blocks, first.blocks_done_before, first.utterances, first.failed) == (3, 0, 6, 1)
    keys = [r["key"] for r in read_labels(out)]
    assert keys == [i.key for i in items]
    before = {b: shard_path(out, b).read_text() for b in range(3)}
    shard_path(out, 1).unlink()  # a stopped job: block 1 never written
    again = run_local(items, out, specs, block_size=2, device="cpu", readers=1, log=None)
    assert (again.blocks_done_before, again.utterances) == (2, 2)
    assert {b: shard_path(out, b).read_text() for b in range(3)} == before  # deterministic, nothing duplicated
    assert [r["key"] for r in read_labels(out)] == keys
    assert run_local(items, out, specs, block_size=2, device="cpu", log=None).utterances == 0
    with pytest.raises(ConfigError, match="block_size"):
        plan(items, out, specs, block_size=3)
    with pytest.raises(ConfigError, match="inputs"):
        plan(items[:-1], out, specs, block_size=2)


# ---------------------------------------------------------------------------------------------- filtering


def _record(key, text="打开文件", mean=-0.1, low=-0.5, ctc=0.0, teachers=0.0, guard=True, rate=3.0, unit="char"):
    teacher = {"name": "t0", "text": text, "mean_logprob": mean, "min_logprob": low, "guard_ok": guard,
               "guard_reasons": [] if guard else ["repetition: text 1-gram '好' repeated 9x (> 4)"],
               "compression_ratio": 1.0, "rate": rate, "rate_unit": unit, "ctc_text": text, "ctc_cer": ctc}
    return {"key": key, "audio": f"/a/{key}.wav", "duration": 2.0, "text": text, "lang": "zh",
            "teachers": [teacher, {"name": "t1", "text": text}], "teacher_cer": teachers}


RECORDS = [
    _record("good"),
    _record("unsure", mean=-0.9),
    _record("ctc", ctc=40.0),
    _record("others", teachers=50.0),
    _record("loop", guard=False),
    _record("fast", rate=20.0),
    _record("empty", text=""),
    {"key": "broken", "audio": "/a/broken.wav", "error": "cannot read"},
]


def test_thresholds_give_each_rejection_its_reason():
    result = apply_filter(RECORDS, Thresholds())
    assert [r["key"] for r in result.kept] == ["good"]
    reasons = {r["key"]: why for r, why in result.rejected}
    assert reasons["unsure"] == ["logprob: mean -0.9 < -0.5"]
    assert reasons["ctc"][0].startswith("ctc: ") and reasons["others"][0].startswith("teachers: ")
    assert reasons["loop"][0].startswith("guard: t0: repetition")
    assert reasons["fast"] == ["rate: 20.0 chars/s outside [1.0, 12.0]"]
    assert reasons["empty"] == ["empty: no text"] and reasons["broken"] == ["error: cannot read"]
    assert result.counts() == {"logprob": 1, "ctc": 1, "teachers": 1, "guard": 1, "rate": 1, "empty": 1, "error": 1}
    loose = apply_filter(RECORDS, Thresholds(min_mean_logprob=None, max_ctc_cer=None, max_teacher_cer=None,
                                             guard=False, char_rate=(0, 100)))
    assert [r["key"] for r in loose.kept] == ["good", "unsure", "ctc", "others", "loop", "fast"]


def test_target_yield_keeps_the_best_by_combined_rank():
    scores = combined_scores(RECORDS[:4])
    assert scores[0] == max(scores)  # best on every signal
    result = apply_filter(RECORDS, keep_fraction=0.25)  # 2 of 8
    assert [r["key"] for r in result.kept] == ["good", "unsure"]
    assert {r["key"] for r, why in result.rejected if why[0].startswith("yield:")} == {"ctc", "others"}
    assert len(apply_filter(RECORDS, keep_fraction=1.0).kept) == 4  # the hard checks still apply
    with pytest.raises(ValueError):
        apply_filter(RECORDS, keep_fraction=1.5)


def test_filter_writes_a_manifest_training_reads(tmp_path):
    from mooer.data.manifest import read_manifest

    result = apply_filter(RECORDS + [dict(_record("mtl"), translation="Open the file")],
                          Thresholds(max_teacher_cer=None))
    manifest, report = tmp_path / "pseudo.jsonl", tmp_path / "report.json"
    assert write_outputs(result, manifest, report, Thresholds(), None) == 3
    read = read_manifest(manifest, check_files=False)
    assert [(u.id, u.text, u.translation, u.duration, u.lang) for u in read.utterances] == [
        ("good", "打开文件", None, 2.0, "zh"), ("others", "打开文件", None, 2.0, "zh"),
        ("mtl", "打开文件", "Open the file", 2.0, "zh")]
    body = json.loads(report.read_text(encoding="utf-8"))
    assert (body["total"], body["kept"], body["rejected"]) == (9, 3, 6)
    assert {u["key"] for u in body["rejected_utterances"]} == {"unsure", "ctc", "loop", "fast", "empty", "broken"}


def test_cli_pseudo_label_then_filter(pool, tmp_path, capsys):
    from mooer.cli import main

    out = tmp_path / "labels"
    assert main(["pseudo-label", "--scp", str(pool), "--output", str(out), "--teacher", TEACHERS[0],
                 "--teacher", TEACHERS[1], "--block-size", "4", "--device", "cpu"]) == 0
    assert "2 of 2 blocks labelled" in capsys.readouterr().err
    manifest = tmp_path / "pseudo.jsonl"
    assert main(["filter", str(out), "--output", str(manifest), "--yield", "0.5", "--no-guard",
                 "--char-rate", "0", "1000", "--word-rate", "0", "1000"]) == 0
    err = capsys.readouterr().err
    assert "kept 3 of 6 utterances" in err
    report = json.loads((tmp_path / "pseudo.jsonl.report.json").read_text(encoding="utf-8"))
    assert report["kept"] == 3 and report["rejected_by_reason"]["error"] == 1
    assert len(manifest.read_text(encoding="utf-8").splitlines()) == 3
    assert main(["filter", str(tmp_path / "nothing"), "--output", str(manifest)]) == 2
