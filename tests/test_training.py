"""Training: schedule values, config handling, overfitting a tiny model, export round trip, continued LoRA,
exact kill-and-resume, and DDP / DeepSpeed ZeRO-2 with two CPU processes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fixtures_path import AUDIO, OFFICIAL_TINY

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
CONFIGS = ROOT / "src" / "mooer" / "configs"
CLIPS = ("zh1", "zh2", "en1")


def write_manifest(path: Path, clips=CLIPS) -> Path:
    """A manifest of fixture clips with their transcripts and translations."""
    lines = (AUDIO / "transcripts.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    with path.open("w", encoding="utf-8") as f:
        for line in lines[1:]:
            row = dict(zip(header, line.split("\t")))
            if row["clip"] not in clips:
                continue
            f.write(json.dumps({
                "id": row["clip"], "audio": str(AUDIO / row["file"]), "duration": float(row["seconds"]),
                "text": row["text (spoken sentence; unknown for demo)"],
                "translation": row["english (reference translation)"] or None, "lang": row["lang"],
            }, ensure_ascii=False) + "\n")
    return path


def read_metrics(exp_dir: Path) -> dict[int, dict]:
    out = {}
    for line in (exp_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec
    return out


def transcripts() -> dict[str, str]:
    rows = [ln.split("\t") for ln in (AUDIO / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    return {r[0]: r[7] for r in rows if r[0] in CLIPS}


# ------------------------------------------------------------------------------------------- schedule


def test_official_schedule_appendix_a_values():
    from mooer.training.schedule import build_scheduler, official_factor

    peak, warmup, total = 1e-4, 1000, 1_000_000
    expected = {499: 8.996566681120064e-05, 549: 9.134542298314147e-05, 599: 9.26050416794548e-05, 999: 1e-4}
    for it, lr in expected.items():
        assert peak * official_factor(it, warmup, total) == pytest.approx(lr, rel=1e-12, abs=0)
    assert official_factor(0, warmup, total) == 0.0  # the first step runs at lr 0, as in the original
    assert peak * official_factor(total, warmup, total) == 0.0
    assert official_factor(500_500, warmup, total) == pytest.approx(0.5)

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = build_scheduler(opt, "official", warmup, total)
    lrs = []
    for _ in range(600):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[499] == pytest.approx(expected[499], rel=1e-12)
    assert lrs[599] == pytest.approx(expected[599], rel=1e-12)


def test_cosine_schedule():
    from mooer.training.schedule import cosine_factor

    assert cosine_factor(0, 10, 110) == pytest.approx(0.1)
    assert cosine_factor(9, 10, 110) == pytest.approx(1.0)
    assert cosine_factor(60, 10, 110) == pytest.approx(0.5)
    assert cosine_factor(110, 10, 110, min_ratio=0.1) == pytest.approx(0.1)


# --------------------------------------------------------------------------------------------- config


def test_config_overrides_types_and_paths(tmp_path):
    from mooer.training.config import load_config

    cfg = load_config(TINY, ["optim.lr=5e-4", "train.epochs=3", "model.lora.target_modules=[q_proj, v_proj]",
                             "model.llm_config.num_hidden_layers=1", "data.tasks={asr: 1, ast: 0.5}",
                             "train.exp_dir=rel/exp", "optim.clip_grad_norm=2", "model.freeze_llm=false"])
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3
    assert cfg.optim.clip_grad_norm == 2.0 and isinstance(cfg.optim.clip_grad_norm, float)
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.model.llm_config["num_hidden_layers"] == 1 and cfg.model.llm_config["hidden_size"] == 64
    assert cfg.data.tasks == {"asr": 1, "ast": 0.5}
    assert cfg.model.freeze_llm is False
    # relative paths: in the file → against the file's directory; on the command line → against the cwd
    assert Path(cfg.model.tokenizer_path) == (OFFICIAL_TINY / "Qwen2-tiny").resolve()
    assert Path(cfg.train.exp_dir) == Path.cwd() / "rel" / "exp"


def test_config_errors_name_the_key(tmp_path):
    from mooer.errors import ConfigError
    from mooer.training.config import load_config

    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(TINY, ["optim.learning_rate=1e-3"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(TINY, ["train.epochs=many"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  llm_path: x\n  frobnicate: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="frobnicate"):
        load_config(bad)
    with pytest.raises(ConfigError, match="engine.type"):
        load_config(TINY, ["engine.type=horovod"])


def test_example_config_loads():
    from mooer.training.config import load_config

    cfg = load_config(CONFIGS / "train_example.yaml")
    assert cfg.model.lora.r == 64 and cfg.model.lora.alpha == 16 and len(cfg.model.lora.target_modules) == 7
    assert cfg.model.freeze_encoder and not cfg.model.freeze_adapter and cfg.model.freeze_llm
    assert cfg.optim.schedule == "official" and cfg.optim.warmup_steps == 1000 and cfg.optim.lr == 1e-4
    for name in ("deepspeed_zero2.json", "deepspeed_zero3.json"):
        json.loads((CONFIGS / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ overfit + export


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """Train the tiny from-scratch model on three clips until it memorises them (in-process)."""
    from mooer.training import load_config, train

    tmp = tmp_path_factory.mktemp("overfit")
    manifest = write_manifest(tmp / "train.jsonl")
    threads = torch.get_num_threads()
    cfg = load_config(TINY, [f"data.train={manifest}", f"data.dev={manifest}", f"train.exp_dir={tmp / 'exp'}",
                             "export.formats=[mooer, official]"])
    try:
        result = train(cfg)
    finally:
        torch.set_num_threads(threads)
    return result


def test_overfit_loss_falls_and_greedy_decoding_reproduces_transcripts(overfit):
    losses = overfit.losses
    first, last = losses[1], losses[max(losses)]
    assert all(math.isfinite(v) for v in losses.values())
    assert last * 10 <= first, f"loss only fell from {first:.3f} to {last:.3f}"
    assert overfit.validation["token_accuracy"] == 1.0
    assert overfit.validation["asr/cer_zh"] == 0.0 and overfit.validation["asr/wer_en"] == 0.0

    from mooer.api import MooER
    from mooer.checkpoint import Loaded

    b = overfit.built
    api = MooER(Loaded(b.model.eval(), b.tokenizer, b.cmvn, b.prompts, b.default_task))
    results = api.transcribe([str(AUDIO / f"{c}.wav") for c in CLIPS], decoding="greedy")
    assert {r.key: r.text for r in results} == transcripts()
    # the run wrote its logs, TensorBoard events, CMVN and a final checkpoint
    exp = overfit.exp_dir
    assert (exp / "train.log").is_file() and list((exp / "tb").iterdir()) and (exp / "am.mvn").is_file()
    assert (exp / "checkpoints" / f"step-{overfit.state.step:08d}" / "state.pt").is_file()


def test_export_roundtrip_through_mooer_transcribe(overfit, capsys):
    """`mooer transcribe --model EXPORT` gives what the in-memory model gives (both formats)."""
    from mooer.api import MooER
    from mooer.checkpoint import Loaded, load_checkpoint
    from mooer.cli import main

    b = overfit.built
    live = MooER(Loaded(b.model.eval(), b.tokenizer, b.cmvn, b.prompts, b.default_task))
    files = [str(AUDIO / f"{c}.wav") for c in CLIPS]
    for preset in ("greedy", "official"):
        want = {r.key: r.text for r in live.transcribe(files, decoding=preset)}
        for fmt in ("mooer", "official"):
            capsys.readouterr()
            assert main(["transcribe", "--model", overfit.export[fmt], "--preset", preset, "--format", "jsonl",
                         *files]) == 0
            out = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
            assert {r["key"]: r["text"] for r in out} == want, (fmt, preset)
    # the official export loads back strictly, with the trained weights and the CMVN bit-exact
    loaded = load_checkpoint(overfit.export["official"], device="cpu", dtype="float32")
    for name, tensor in b.model.adapter.state_dict().items():
        torch.testing.assert_close(loaded.model.adapter.state_dict()[name], tensor, rtol=0, atol=0)
    assert torch.equal(loaded.cmvn.shift, b.cmvn.shift) and torch.equal(loaded.cmvn.scale, b.cmvn.scale)
