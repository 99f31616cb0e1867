"""Sharded, resumable decoding (``mooer.inference.sharded``): 2 CPU processes under torchrun equal one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_path import AUDIO, CLIPS, OFFICIAL_TINY
from mooer.decoding import Result
from mooer.distributed import DistInfo, dist_info, shard
from mooer.inference.sharded import claim, claims_dir, rank_file, read_records, run_sharded
from mooer.output.formats import write_results

# greedy, short outputs: the point is the bookkeeping, not the decoding
DECODE = ["--model", str(OFFICIAL_TINY), "--device", "cpu", "--task", "ast", "--preset", "greedy",
          "--max-new-tokens", "12", "--batch-size", "2", "--format", "jsonl"]


# ------------------------------------------------------------------------------------------ unit level


def test_shard_covers_everything_once():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            for strided in (True, False):
                parts = [shard(n, r, world, strided) for r in range(world)]
                assert sorted(i for p in parts for i in p) == list(range(n))
                assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(5, 1, 2) == [1, 3] and shard(5, 1, 2, strided=False) == [3, 4]


def test_dist_info_from_environment():
    assert dist_info({}) == DistInfo(0, 1, 0)
    info = dist_info({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.distributed) == (3, 4, 1, True)
    with pytest.raises(ValueError):
        dist_info({"RANK": "4", "WORLD_SIZE": "4"})


def test_read_records_skips_cut_lines_errors_and_reads_tsv(tmp_path):
    a = tmp_path / "out.jsonl"
    a.write_text('{"key": "x", "text": "1"}\n{"key": "y", "error": "bad"}\n{"key": "z", "te', encoding="utf-8")
    b = tmp_path / "out.tsv"
    b.write_text("k\tline one\\nline two\n", encoding="utf-8")
    records = read_records([a, b, tmp_path / "absent"])
    assert sorted(records) == ["k", "x"]
    assert records["k"]["text"] == "line one\nline two"


class FakeModel:
    """transcribe() that writes 'text of KEY' (or ``texts[KEY]``) and counts what it was asked to decode."""

    def __init__(self, fail_after: int | None = None, texts: dict[str, str] | None = None):
        self.decoded: list[str] = []
        self.fail_after = fail_after
        self.texts = texts or {}

    def transcribe(self, paths, *, keys, on_results, batch_size=2, **kwargs):
        out = []
        for start in range(0, len(paths), batch_size):
            batch = [Result(key=k, audio=p, task="asr", text=self.texts.get(k, f"text of {k}"))
                     for p, k in zip(paths[start : start + batch_size], keys[start : start + batch_size])]
            if self.fail_after is not None and len(self.decoded) >= self.fail_after:
                raise KeyboardInterrupt  # an interruption mid-run
            self.decoded += [r.key for r in batch]
            on_results(batch)
            out += batch
        return out


def _write_jsonl(results, out):
    for r in results:
        out.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")


def test_run_sharded_interrupted_then_resumed(tmp_path):
    keys = [f"u{i}" for i in range(7)]
    paths = [f"/a/{k}.wav" for k in keys]
    output = tmp_path / "hyp.jsonl"
    model = FakeModel(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_sharded(model, paths, keys, output, write=_write_jsonl, resume=False, window=3, log=None)
    assert not output.exists()
    assert len(rank_file(output, 0).read_text().splitlines()) == 4  # flushed per batch (two chunks of 2)
    with open(rank_file(output, 0), "a") as f:
        f.write('{"key": "u9", "te')  # a record cut mid-line
    model = FakeModel()
    results = run_sharded(model, paths, keys, output, write=_write_jsonl, resume=True, window=3, log=None)
    assert model.decoded == ["u4", "u5", "u6"]
    assert [r.key for r in results] == keys
    assert [json.loads(line)["key"] for line in output.read_text().splitlines()] == keys
    assert not rank_file(output, 0).exists()
    model = FakeModel()  # everything done: nothing decoded, output rewritten identically
    before = output.read_text()
    run_sharded(model, paths, keys, output, write=_write_jsonl, resume=True, log=None)
    assert model.decoded == [] and output.read_text() == before


def _claim_all(directory, chunks, queue):
    queue.put([c for c in range(chunks) if claim(Path(directory), c)])


def test_claims_are_exclusive_across_processes(tmp_path):
    """Four processes race for the same 200 chunks: each chunk is won exactly once."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(tmp_path), 200, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    won = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(c for w in won for c in w) == list(range(200))
    assert sum(1 for w in won if w) >= 1


def test_restart_on_another_world_size_loses_and_repeats_nothing(tmp_path):
    """A 3-rank run stopped mid-way (rank files with records, one cut line, one error, stale claims) is
    finished by one process: exactly the keys without a successful record are decoded, once."""
    keys = [f"u{i}" for i in range(12)]
    paths = [f"/a/{k}.wav" for k in keys]
    output = tmp_path / "hyp.jsonl"
    line = lambda k: json.dumps({"key": k, "audio": f"/a/{k}.wav", "task": "asr", "text": f"old {k}"}) + "\n"
    rank_file(output, 0).write_text(line("u0") + line("u1") + line("u2"), encoding="utf-8")
    rank_file(output, 1).write_text(line("u5") + json.dumps({"key": "u6", "error": "bad"}) + "\n", encoding="utf-8")
    rank_file(output, 2).write_text(line("u9") + line("u10")[:12], encoding="utf-8")  # cut mid-line
    claims_dir(output).mkdir()
    for chunk in range(12):  # the stopped run's claims must not block anything
        (claims_dir(output) / str(chunk)).write_text("gone 1\n")
    model = FakeModel()
    results = run_sharded(model, paths, keys, output, write=_write_jsonl, resume=True, window=2, log=None)
    assert sorted(model.decoded) == sorted(["u3", "u4", "u6", "u7", "u8", "u10", "u11"])
    assert len(model.decoded) == len(set(model.decoded))
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert [r["key"] for r in lines] == keys and [r.key for r in results] == keys
    assert {r["key"]: r["text"] for r in lines}["u5"] == "old u5"  # taken over, not decoded again
    assert not list(tmp_path.glob("hyp.jsonl.rank*")) and not claims_dir(output).exists()


def test_resume_keeps_escaped_texts_exactly(tmp_path):
    """tsv output, resumed twice: from the jsonl rank file of an interrupted run, then from the tsv itself;
    texts with a literal backslash-n, backslashes, tabs and newlines come back unchanged."""
    texts = {"u0": r"C:\new\table", "u1": "trailing \\", "u2": "两行\n第二行", "u3": "a\tb\r\nc",
             "u4": "🎉 \\\\n"}
    keys = list(texts)
    paths = [f"/a/{k}.wav" for k in keys]
    output = tmp_path / "hyp.tsv"

    def write_tsv(results, out):
        write_results(results, "tsv", out)

    with pytest.raises(KeyboardInterrupt):
        run_sharded(FakeModel(fail_after=2, texts=texts), paths, keys, output, write=write_tsv, resume=True,
                    log=None)
    model = FakeModel(texts=texts)
    results = run_sharded(model, paths, keys, output, write=write_tsv, resume=True, log=None)
    assert model.decoded == ["u2", "u3", "u4"]
    assert {r.key: r.text for r in results} == texts
    first = output.read_text(encoding="utf-8")
    model = FakeModel()  # would write other texts: nothing may be decoded again
    results = run_sharded(model, paths, keys, output, write=write_tsv, resume=True, log=None)
    assert model.decoded == []
    assert {r.key: r.text for r in results} == texts
    assert output.read_text(encoding="utf-8") == first


# ------------------------------------------------------------------------------------ real processes


@pytest.fixture(scope="module")
def scp(tmp_path_factory):
    root = tmp_path_factory.mktemp("par")
    path = root / "wav.scp"
    # input order deliberately not sorted by length; one unreadable input
    lines = [f"{c} {AUDIO / (c + '.wav')}" for c in ("zh1", "short", "demo", "en1", "zh2")]
    lines.insert(3, f"broken {root / 'missing.wav'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single_run(scp):
    from mooer.cli import main

    out = scp.parent / "single.jsonl"
    assert main(["transcribe", "--scp", str(scp), "--output", str(out), *DECODE]) == 1  # one input failed
    return out.read_text(encoding="utf-8")


def _torchrun(args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "mooer.cli", "transcribe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_two_processes_equal_one(scp, single_run):
    out = scp.parent / "two.jsonl"
    proc = _torchrun(["--scp", str(scp), "--output", str(out), *DECODE])
    assert proc.returncode == 1, proc.stderr[-3000:]  # the broken input is reported, like a single run
    assert out.read_text(encoding="utf-8") == single_run
    keys = [json.loads(line)["key"] for line in single_run.splitlines()]
    assert keys == ["zh1", "short", "demo", "broken", "en1", "zh2"]  # input order
    assert not list(scp.parent.glob("two.jsonl.rank*"))
    assert "rank 1/2" in proc.stderr or "rank 0/2" in proc.stderr


def test_resume_skips_decoded_keys_and_completes_partial_output(scp, single_run, capsys):
    from mooer.cli import main

    out = scp.parent / "resumed.jsonl"
    lines = single_run.splitlines(keepends=True)
    # an interrupted run: two results in the final output, one in a rank file, one cut line
    out.write_text(lines[0] + lines[2], encoding="utf-8")
    rank_file(out, 1).write_text(lines[5] + lines[4][:10], encoding="utf-8")
    assert main(["transcribe", "--scp", str(scp), "--output", str(out), "--resume", *DECODE]) == 1
    err = capsys.readouterr().err
    assert "3 already decoded, 3 to decode" in err  # en1 (cut), broken (error) and short are redone
    assert out.read_text(encoding="utf-8") == single_run
    assert not list(scp.parent.glob("resumed.jsonl.rank*"))

    # a second resumed run finds everything that succeeded and decodes only the broken input again
    assert main(["transcribe", "--scp", str(scp), "--output", str(out), "--resume", *DECODE]) == 1
    assert "5 already decoded, 1 to decode" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == single_run


def test_resume_under_torchrun_skips_all_keys(scp, single_run):
    out = scp.parent / "all.jsonl"
    good = "".join(line for line in single_run.splitlines(keepends=True) if '"error"' not in line)
    out.write_text(good, encoding="utf-8")
    proc = _torchrun(["--scp", str(scp), "--output", str(out), "--resume", *DECODE])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "5 already decoded" in proc.stderr
    assert out.read_text(encoding="utf-8") == single_run


def test_resume_needs_output(scp, capsys):
    from mooer.cli import main

    assert main(["transcribe", "--scp", str(scp), "--resume", *DECODE]) == 2
    assert DECODE[-2:] == ["--format", "jsonl"]
    assert main(["transcribe", "--scp", str(scp), "--resume", "--output", str(scp.parent / "x.srt"), *DECODE[:-2],
                 "--format", "srt"]) == 2
