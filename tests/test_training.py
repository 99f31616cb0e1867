"""Training: schedule values, config handling, overfitting a tiny model, export round trip, continued LoRA,
exact kill-and-resume, and DDP / DeepSpeed ZeRO-2 with two CPU processes."""

from __future__ import annotations

import json
import math
import os
import shutil
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


def train_in_process(cfg):
    """``mooer.training.train(cfg)``, restoring the torch thread count it sets (train.num_threads)."""
    from mooer.training import train

    threads = torch.get_num_threads()
    try:
        return train(cfg)
    finally:
        torch.set_num_threads(threads)


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
    from mooer.training import load_config

    tmp = tmp_path_factory.mktemp("overfit")
    manifest = write_manifest(tmp / "train.jsonl")
    cfg = load_config(TINY, [f"data.train={manifest}", f"data.dev={manifest}", f"train.exp_dir={tmp / 'exp'}",
                             "export.formats=[mooer, official]", "model.ctc_weight=0.3"])
    return train_in_process(cfg)


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
    # the auxiliary CTC head trained (its loss is logged)
    assert overfit.built.model.ctc_head is not None
    assert " ctc " in (exp / "train.log").read_text(encoding="utf-8")


def test_export_roundtrip_through_mooer_transcribe(overfit, capsys):
    """`mooer transcribe --model EXPORT` gives what the in-memory model gives (both formats)."""
    from mooer.api import MooER
    from mooer.checkpoint import Loaded, load_checkpoint
    from mooer.cli import main
    from mooer.decoding import get_preset

    b = overfit.built
    live = MooER(Loaded(b.model.eval(), b.tokenizer, b.cmvn, b.prompts, b.default_task))
    files = [str(AUDIO / f"{c}.wav") for c in CLIPS]
    for preset in ("greedy", "official"):
        # the mooer export keeps the CTC head (joint decoding by default), the official layout has no place for it
        for fmt, ctc_weight in (("mooer", None), ("official", 0.0)):
            options = get_preset(preset).replace(ctc_weight=ctc_weight)
            want = {r.key: r.text for r in live.transcribe(files, decoding=options)}
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


def test_exported_ctc_head_drives_joint_decoding_and_loads_strictly(overfit, capsys, tmp_path):
    """The mooer export carries the trained CTC head; joint decoding uses it; a damaged head is refused."""
    from safetensors.torch import load_file, save_file

    from mooer.checkpoint import load_checkpoint
    from mooer.cli import main
    from mooer.errors import CheckpointError

    export = Path(overfit.export["mooer"])
    head = overfit.built.model.ctc_head
    config = json.loads((export / "config.json").read_text(encoding="utf-8"))
    assert config["ctc_head"] == {"classes": len(overfit.built.tokenizer) + 1} == {"classes": head.out_features}
    loaded = load_checkpoint(export, device="cpu", dtype="float32")
    torch.testing.assert_close(loaded.model.ctc_head.weight, head.weight.detach(), rtol=0, atol=0)
    assert load_checkpoint(overfit.export["official"], device="cpu").model.ctc_head is None

    # training that starts from the export continues its head; a start without one gets a new head
    from mooer.training import load_config
    from mooer.training.model import build_model

    def start(init_from: str) -> torch.nn.Linear:
        cfg = load_config(TINY, [f"model.init_from={init_from}", "model.ctc_weight=0.3", "model.llm_config=null",
                                 "model.tokenizer_path=null", "model.cmvn=null", "model.encoder={}"])
        return build_model(cfg.model, torch.device("cpu"), torch.float32).model.ctc_head

    torch.testing.assert_close(start(str(export)).weight, head.weight.detach(), rtol=0, atol=0)
    fresh = start(overfit.export["official"])
    assert fresh.weight.shape == head.weight.shape and not torch.equal(fresh.weight, head.weight.detach())

    files = [str(AUDIO / f"{c}.wav") for c in CLIPS]
    def transcribe(weight: str) -> dict:
        capsys.readouterr()
        assert main(["transcribe", "--model", str(export), "--ctc-weight", weight, "--format", "jsonl", *files]) == 0
        return {r["key"]: r["text"] for r in map(json.loads, capsys.readouterr().out.splitlines())}

    # beam search (official preset) with the CTC head weighted 0.7: still the memorised transcripts; the head
    # alone (weight 1: the LLM only proposes candidates) trained too briefly here and gets them wrong, which
    # shows that its scores do steer the search
    assert transcribe("0.7") == transcripts()
    assert transcribe("1.0") != transcripts()
    assert main(["transcribe", "--model", overfit.export["official"], "--ctc-weight", "0.5", *files]) == 1
    assert "no CTC head" in capsys.readouterr().err
    assert main(["transcribe", "--ctc-weight", "1.5", *files]) == 2
    assert "ctc_weight must be in [0, 1]" in capsys.readouterr().err

    damaged = tmp_path / "damaged"
    shutil.copytree(export, damaged)
    state = load_file(str(damaged / "model.safetensors"))
    del state["ctc_head.bias"]
    save_file(state, str(damaged / "model.safetensors"))
    with pytest.raises(CheckpointError, match="CTC head.*missing keys.*bias"):
        load_checkpoint(damaged, device="cpu")
    config.pop("ctc_head")  # weights the config does not announce are unexpected, not ignored
    (damaged / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(CheckpointError, match="unexpected key 'ctc_head.weight'"):
        load_checkpoint(damaged, device="cpu")


def test_lora_on_a_frozen_encoder_keeps_the_ctc_head_frozen(overfit, tmp_path, caplog):
    """Fine-tuning an export with a CTC head without the CTC loss: with the encoder frozen the head still
    matches it and is kept (frozen) in the new export; with the encoder training it is dropped, with a warning."""
    from mooer.checkpoint import load_checkpoint
    from mooer.training import load_config
    from mooer.training.model import build_model

    export = overfit.export["mooer"]
    head = overfit.built.model.ctc_head.weight.detach().clone()
    common = [f"model.init_from={export}", "model.llm_config=null", "model.tokenizer_path=null", "model.cmvn=null",
              "model.encoder={}", "model.ctc_weight=0"]
    manifest = write_manifest(tmp_path / "train.jsonl")
    cfg = load_config(TINY, [*common, "model.freeze_encoder=true", "model.freeze_llm=true", "model.lora.enabled=true",
                             "model.lora.r=4", f"data.train={manifest}", "train.epochs=2", "train.tensorboard=false",
                             f"train.exp_dir={tmp_path / 'lora'}", "validation.decode_utterances=0"])
    result = train_in_process(cfg)
    kept = result.built.model.ctc_head
    assert kept is not None and not kept.weight.requires_grad
    assert result.built.source["ctc_head"] == "init_from (frozen)"
    again = load_checkpoint(result.export["mooer"], device="cpu", dtype="float32")
    torch.testing.assert_close(again.model.ctc_head.weight, head, rtol=0, atol=0)
    assert any("lora_" in n for n, _ in result.built.model.llm.named_parameters())  # it did train a LoRA

    caplog.clear()
    with caplog.at_level("WARNING", logger="mooer.training.model"):
        dropped = build_model(load_config(TINY, common).model, torch.device("cpu"), torch.float32)
    assert dropped.model.ctc_head is None and "ctc_head" not in dropped.source
    assert "CTC head" in caplog.text and "dropped" in caplog.text


# -------------------------------------------------------------------------------------- exact resume


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mooer.cli", "train", "--config", str(TINY), *args]


def test_kill_and_resume_repeats_the_losses_exactly(tmp_path):
    """SIGKILL a run after a mid-epoch checkpoint, resume it: the loss sequence equals an uninterrupted run.

    LoRA dropout (RNG), shuffled batches (sampler position) and gradient accumulation across epoch
    boundaries are all in play."""
    manifest = write_manifest(tmp_path / "train.jsonl")
    common = [f"data.train={manifest}", "model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.1",
              "model.freeze_llm=true", "data.batch_size=1", "optim.grad_accum=2", "train.epochs=30",
              "optim.total_steps=45", "train.save_every=5", "export.at_end=false", "validation.decode_utterances=0",
              "train.tensorboard=false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cli(*common, f"train.exp_dir={ref}"), check=True, env=env, capture_output=True, timeout=600)
    expected = read_metrics(ref)
    assert len(expected) == 45

    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(*common, f"train.exp_dir={run}"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = run / "checkpoints" / "step-00000010" / "state.pt"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    assert 10 <= killed_at < 45

    # a fresh start into the same exp_dir is refused; --resume continues from the latest checkpoint
    fresh = subprocess.run(_cli(*common, f"train.exp_dir={run}"), env=env, capture_output=True, text=True)
    assert fresh.returncode != 0 and "--resume" in fresh.stderr
    subprocess.run(_cli(*common, f"train.exp_dir={run}", "--resume"), check=True, env=env, capture_output=True,
                   timeout=600)
    got = read_metrics(run)
    assert sorted(got) == sorted(expected)
    for step in expected:
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], abs=1e-6, rel=0), step
        assert got[step]["lr"] == pytest.approx(expected[step]["lr"], abs=1e-12, rel=1e-9), step


# ----------------------------------------------------------------------------------- continued LoRA


def test_continued_lora_stays_trainable_and_exports(tmp_path):
    """Continuing a release's LoRA trains it *as LoRA* on the unmerged LLM (the original merged it, 15.5)."""
    from peft.utils import load_peft_weights

    from mooer.checkpoint import load_checkpoint
    from mooer.training import load_config

    manifest = write_manifest(tmp_path / "train.jsonl")
    lora_dir = OFFICIAL_TINY / "asr_ast_mtl" / "lora_weights"
    cfg = load_config(None, [
        f"model.init_from={OFFICIAL_TINY}", "model.variant=asr_ast_mtl", f"model.lora.init_from={lora_dir}",
        f"data.train={manifest}", "data.sampler=fixed", "data.batch_size=3", "train.epochs=4", "optim.lr=1e-3",
        "optim.schedule=constant", "train.save_every=0", "train.progress=false", "train.tensorboard=false",
        "train.num_threads=1", f"train.exp_dir={tmp_path / 'exp'}", "export.formats=[official]",
        "export.variant=asr_ast_mtl"])
    result = train_in_process(cfg)
    model = result.built.model
    lora = {n: p for n, p in model.llm.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n)
    assert all(p.requires_grad for p in model.adapter.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(set(losses)) == len(losses) and losses[-1] < losses[0]

    # the LoRA moved away from the release's, and the export holds it as a LoRA again
    start = load_peft_weights(str(lora_dir), device="cpu")
    exported_dir = Path(result.export["official"]) / "asr_ast_mtl" / "lora_weights"
    exported = load_peft_weights(str(exported_dir), device="cpu")
    assert set(exported) == set(start)
    assert any(not torch.equal(exported[k], start[k]) for k in start)
    assert json.loads((exported_dir / "adapter_config.json").read_text())["r"] == 8
    # the exported LLM is the release's base LLM, unmerged
    from safetensors.torch import load_file

    released = load_file(str(OFFICIAL_TINY / "Qwen2-tiny" / "model.safetensors"))
    written = load_file(str(Path(result.export["official"]) / "llm" / "model.safetensors"))
    assert set(written) == set(released) and all(torch.equal(written[k], released[k]) for k in released)
    base = load_checkpoint(OFFICIAL_TINY, variant="asr_ast_mtl", device="cpu", dtype="float32")
    again = load_checkpoint(result.export["official"], variant="asr_ast_mtl", device="cpu", dtype="float32")
    assert again.info["lora"]["r"] == 8
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(again.model.llm.state_dict()[q], base.model.llm.state_dict()[q])  # new LoRA merged


# ------------------------------------------------------------------------------- DDP and DeepSpeed


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "mooer.cli", "train", "--config", str(TINY), *args]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _distributed_common(manifest: Path) -> list[str]:
    return [f"data.train={manifest}", "data.batch_size=1", "train.epochs=3", "optim.total_steps=8",
            "train.save_every=2", "train.tensorboard=false"]


def test_ddp_two_cpu_processes(tmp_path):
    manifest = write_manifest(tmp_path / "train.jsonl")
    exp = tmp_path / "ddp"
    _torchrun(tmp_path, *_distributed_common(manifest), f"data.dev={manifest}", "engine.type=ddp",
              f"train.exp_dir={exp}", "validation.decode_utterances=2", "validation.max_new_tokens=5")
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 6  # 3 clips padded to 4 → 2 batches per rank
    assert summary["utterances"] == 12
    a, b = summary["rank_checksums"]
    assert a == b  # DDP keeps the replicas identical
    losses = read_metrics(exp)
    assert sorted(losses) == list(range(1, 7)) and all(math.isfinite(r["loss"]) for r in losses.values())
    assert math.isfinite(summary["validation"]["loss"])
    assert (exp / "export" / "mooer" / "model.safetensors").is_file()


def test_a_failing_rank_ends_the_job_with_its_error_instead_of_hanging(tmp_path):
    """One rank raises while the other waits on it in a collective: the failing rank must not wait for
    the others at teardown (that hung a real run with its error unreported); it exits, torchrun stops the
    other rank, and the error is in the output."""
    script = tmp_path / "failing_rank.py"
    script.write_text(
        "import sys, torch, torch.distributed as dist\n"
        "import mooer.training.trainer as trainer\n"
        "def train(cfg):\n"
        "    dist.init_process_group('gloo')\n"
        "    if dist.get_rank() == 0:\n"
        "        raise RuntimeError('rank 0 failed at step 801')\n"
        "    dist.recv(torch.zeros(1), src=0)  # rank 1: still training, waiting for rank 0\n"
        "trainer.train = train\n"
        "from mooer.cli import main\n"
        f"sys.exit(main(['train', '--config', {str(TINY)!r}]))\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(script)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
        proc.communicate()
        pytest.fail("the job hung after one rank failed")
    assert proc.returncode != 0
    assert "RuntimeError: rank 0 failed at step 801" in stderr


def test_deepspeed_zero2_two_cpu_processes_resume_and_export(tmp_path):
    from mooer.checkpoint import load_checkpoint

    manifest = write_manifest(tmp_path / "train.jsonl")
    exp = tmp_path / "ds"
    ds = ["engine.type=deepspeed", f"engine.deepspeed_config={CONFIGS / 'deepspeed_zero2.json'}",
          f"train.exp_dir={exp}"]
    _torchrun(tmp_path, *_distributed_common(manifest), *ds)
    first = read_metrics(exp)
    assert sorted(first) == list(range(1, 7)) and all(math.isfinite(r["loss"]) for r in first.values())
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["rank_checksums"][0] == summary["rank_checksums"][1]
    assert (exp / "checkpoints" / "step-00000006" / "deepspeed").is_dir()

    # resume the DeepSpeed checkpoint for one more epoch: the LR schedule continues where it stopped
    _torchrun(tmp_path, *_distributed_common(manifest), *ds, "train.epochs=4", "--resume")
    more = read_metrics(exp)
    assert sorted(more) == list(range(1, 9))
    assert [more[s]["loss"] for s in range(1, 7)] == [first[s]["loss"] for s in range(1, 7)]
    assert more[7]["lr"] == pytest.approx(3e-3 * 8 / 10)  # cosine warm-up 10 steps: factor (7 + 1) / 10

    # --export-only consolidates the ZeRO checkpoint on one process and gives the same model
    out = tmp_path / "export-only"
    cmd = _cli(*_distributed_common(manifest), *ds, "--export-only", "--out", str(out))
    subprocess.run(cmd, check=True, capture_output=True, timeout=600, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    a = load_checkpoint(out / "mooer", device="cpu", dtype="float32").model.state_dict()
    b = load_checkpoint(exp / "export" / "mooer", device="cpu", dtype="float32").model.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------- auxiliary objectives


def test_ctc_forced_alignment_and_guided_attention_loss():
    import numpy as np

    from mooer.models.alignment import ctc_forced_align, guided_attention_loss
    from mooer.prompting import collate_tokens

    lp = np.log(np.full((7, 4), 0.01))
    for t, c in enumerate([3, 0, 0, 3, 1, 3, 1]):  # blank = 3: frames say "0 0 _ 1 _ 1"
        lp[t, c] = np.log(0.97)
    assert ctc_forced_align(lp, [0, 1, 1], blank=3).tolist() == [-1, 0, 0, -1, 1, -1, 2]
    assert ctc_forced_align(lp, [2], blank=3).tolist().count(0) >= 1  # a forced path exists even if unlikely
    assert ctc_forced_align(lp[:2], [1, 1], blank=3) is None  # a repeat needs a blank between: 3 frames
    assert ctc_forced_align(lp, [], blank=3) is None
    # a long target (201 states: more than an int8 back-pointer index can hold): every token, in order
    rng = np.random.default_rng(0)
    target = rng.integers(0, 50, size=100).tolist()
    long_lp = np.log(np.full((300, 51), 1e-3))
    for i, tok in enumerate(target):
        long_lp[3 * i, 50] = long_lp[3 * i + 1, tok] = long_lp[3 * i + 2, 50] = 0.0
    path = ctc_forced_align(long_lp, target, blank=50)
    assert path[1::3].tolist() == list(range(100)) and set(path[0::3]) == set(path[2::3]) == {-1}

    # two rows: 3 audio tokens + 2 prompt tokens + answer; the second row is one audio token shorter
    tokens = collate_tokens([3, 2], [[7, 8], [7, 8]], pad_id=0, answer_ids=[[5, 6, 9], [5, 9]])
    width = tokens.input_ids.shape[1]
    attention = torch.full((2, width, width), 1e-3)
    align = [np.array([0, -1, 1]), np.array([0, -1])]
    # row 0: token 0 is predicted at the last prompt position (4), token 1 at position 5
    attention[0, 4, 0] = attention[0, 5, 2] = 1.0
    row1_audio = tokens.modality_mask[1].nonzero().flatten()
    attention[1, 4, row1_audio[0]] = 1.0
    perfect = guided_attention_loss(attention, tokens.modality_mask, tokens.labels, align)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    attention[0, 5, 2], attention[0, 5, 1] = 1e-3, 1.0  # row 0, token 1 now looks at the wrong audio token
    wrong = guided_attention_loss(attention, tokens.modality_mask, tokens.labels, align)
    assert wrong.item() == pytest.approx(-math.log(1e-3) / 3, rel=1e-4)
    assert guided_attention_loss(attention, tokens.modality_mask, tokens.labels, [None, None]).item() == 0.0


def test_guided_attention_trains_a_head_and_is_validated():
    from mooer.errors import ConfigError
    from mooer.training import load_config
    from mooer.training.model import build_model

    cfg = load_config(TINY, ["model.ctc_weight=0.5", "model.align_weight=1.0", "model.align_head=[1, 2]"])
    model = build_model(cfg.model, torch.device("cpu"), torch.float32).model
    assert model.guided_attention == (1, 2)
    from mooer.prompting import collate_tokens

    feats, lengths = torch.randn(2, 40, 560), torch.tensor([40, 30])
    tokens = collate_tokens([20, 15], [[7, 8], [7, 8]], pad_id=0, answer_ids=[[5, 6, 9], [11, 9]])
    out = model(feats, lengths, tokens, ctc_targets=[[5, 6], [11]])
    assert torch.isfinite(out["align_loss"]) and out["align_loss"] > 0
    out["align_loss"].backward()
    layer = model.llm.model.layers[1].self_attn
    assert layer.q_proj.weight.grad.abs().sum() > 0 and model.encoder.encoders[0].self_attn.linear_out.weight.grad \
        .abs().sum() > 0
    assert model.llm.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0  # lower layers feed the head
    for bad, match in ((["model.align_weight=1.0"], "ctc_weight"),
                       (["model.ctc_weight=0.5", "model.align_weight=1.0", "model.align_head=[5, 0]"], "align_head")):
        with pytest.raises(ConfigError, match=match):
            build_model(load_config(TINY, bad).model, torch.device("cpu"), torch.float32)


def test_encoder_dropout_acts_in_training_only_and_is_validated():
    from mooer.errors import ConfigError
    from mooer.training import load_config
    from mooer.training.model import build_model

    def encoder(*overrides):
        torch.manual_seed(0)
        return build_model(load_config(TINY, list(overrides)).model, torch.device("cpu"), torch.float32).model.encoder

    plain, dropped = encoder(), encoder("model.encoder_dropout=0.2")
    assert plain.state_dict().keys() == dropped.state_dict().keys()  # no new weights: checkpoints are unchanged
    feats, lengths = torch.randn(2, 30, 560), torch.tensor([30, 22])
    with torch.no_grad():
        dropped.train()
        first, second = dropped(feats, lengths), dropped(feats, lengths)
        assert not torch.allclose(first, second)  # a new mask each forward
        plain.eval(), dropped.eval()
        torch.testing.assert_close(dropped(feats, lengths), plain(feats, lengths), rtol=0, atol=0)
    assert sum(m.p == 0.2 for m in dropped.modules() if isinstance(m, torch.nn.Dropout)) == 1 + 2 * 2
    assert [layer.self_attn.attention_dropout for layer in (*dropped.encoders0, *dropped.encoders)] == [0.2, 0.2]
    for bad, match in ((["model.encoder_dropout=0.1", "model.freeze_encoder=true"], "freeze_encoder"),
                       (["model.encoder_dropout=1.0"], r"must be in \[0, 1\)")):
        with pytest.raises(ConfigError, match=match):
            encoder(*bad)


# ------------------------------------------------------------------------------------ CMVN, bad data


def test_cmvn_computed_from_data_and_written_in_kaldi_format(tmp_path):
    from mooer.data.manifest import read_manifest
    from mooer.features import Cmvn, apply_lfr, kaldi_fbank
    from mooer.training.export import write_cmvn
    from mooer.training.trainer import compute_cmvn

    utts = read_manifest(write_manifest(tmp_path / "train.jsonl")).utterances
    cmvn = compute_cmvn(utts, num=10, seed=0)
    feats = torch.cat([apply_lfr(kaldi_fbank(u.load_audio())) for u in utts])
    normed = cmvn.apply(feats)
    assert normed.mean(0).abs().max() < 1e-3 and (normed.std(0, unbiased=False) - 1).abs().max() < 1e-3
    path = write_cmvn(cmvn, tmp_path / "am.mvn")
    back = Cmvn.from_file(path)
    assert torch.equal(back.shift, cmvn.shift) and torch.equal(back.scale, cmvn.scale)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("<Nnet>") and lines[3].startswith("<AddShift> 560 560") and len(lines) == 8


def test_bad_audio_is_skipped_and_cmvn_compute_lands_in_the_export(tmp_path):
    from mooer.checkpoint import load_checkpoint
    from mooer.features import Cmvn
    from mooer.training import load_config

    manifest = write_manifest(tmp_path / "train.jsonl")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with manifest.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "bad", "audio": str(bad), "duration": 2.0, "text": "x"}) + "\n")
    cfg = load_config(TINY, [f"data.train={manifest}", "data.batch_size=1", "data.shuffle=false", "train.epochs=2",
                             "model.cmvn=compute", f"train.exp_dir={tmp_path / 'exp'}", "train.tensorboard=false"])
    result = train_in_process(cfg)
    assert result.state.step == 8 and result.state.utterances == 6
    assert sum(math.isnan(v) for v in result.losses.values()) == 2  # the two steps of the bad file
    computed = Cmvn.from_file(tmp_path / "exp" / "am.mvn")
    exported = load_checkpoint(result.export["mooer"], device="cpu", dtype="float32").cmvn
    assert torch.equal(exported.shift, computed.shift) and torch.equal(exported.scale, computed.scale)

    # validation: a dev batch with no usable utterance is not counted; after a usable batch it still runs a
    # forward (the last usable batch again: under ZeRO-3 a forward is collective), before any it runs none
    from torch.utils.data import DataLoader

    from mooer.distributed import dist_info
    from mooer.training.trainer import autocast_context, make_dataset, make_sampler, read_utterances
    from mooer.training.validation import validate

    built, engine = result.built, result.engine
    cfg.validation.decode_utterances = 0
    forwards = []
    built.model.register_forward_pre_hook(lambda *_: forwards.append(1))

    def dev(path: Path) -> tuple[dict, int]:
        forwards.clear()
        data = make_dataset(read_utterances(str(path), cfg, "dev"), built.cmvn, built, cfg, train=False)
        sampler = make_sampler(cfg, data.durations, dist_info(), shuffle=False, drop_last=False)
        loader = DataLoader(data, batch_sampler=sampler, collate_fn=data.collate_fn)
        res = validate(engine, built, built.cmvn, loader, data, cfg, torch.device("cpu"),
                       lambda: autocast_context(cfg, torch.device("cpu"), engine))
        return res, len(forwards)

    clean, n_clean = dev(write_manifest(tmp_path / "clean.jsonl"))
    bad_first = tmp_path / "bad_first.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    bad_first.write_text("\n".join([lines[-1], *lines[:-1]]) + "\n", encoding="utf-8")
    assert n_clean == 3 and math.isfinite(clean["loss"]) and clean["loss"] > 0
    assert dev(manifest) == (clean, 4)  # the bad clip comes last: its batch runs, uncounted
    assert dev(bad_first) == (clean, 3)  # the bad clip comes first: nothing to run in its place
