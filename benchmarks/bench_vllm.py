#!/usr/bin/env python
"""The ``hf`` and ``vllm`` decoding engines side by side, in one run, on the same MooER-shaped random model.

    python benchmarks/bench_vllm.py                         # CPU: Qwen2-0.5B dimensions, fp32
    python benchmarks/bench_vllm.py --quick --skip serve    # a small smoke run
    python benchmarks/bench_vllm.py --device cuda           # GPU: Qwen2-7B dimensions, bf16 (gpu_check.sh)

Sections (``--skip`` drops some):

* ``job``: an N-utterance batch job (default 64 on CPU, 256 on CUDA) of 2–8 s utterances. ``hf``:
  ``MooER.transcribe(batch_size=--hf-batch)`` (length-sorted padded static batches, HF ``generate``); ``vllm``:
  ``MooER.transcribe(batch_size=N)``: the encoder runs on the whole job, every row goes to vLLM, whose
  scheduler batches the decoding continuously (``max_num_seqs``). Runs alternate hf, vllm, hf, vllm, … so
  that a shared machine's drift hits both alike; medians are reported. The ids of both engines are compared
  row by row (reported, not asserted: random weights have near-ties everywhere).
* ``batch1``: one utterance at a time (end to end: utt/s, tokens/s, RTF) and the batch-1 decode step of each
  engine against the memory-bandwidth bound (bandwidth / bytes of weights read per step).
* ``serve``: ``mooer serve --engine hf`` (micro-batcher) and ``--engine vllm`` (AsyncLLM, continuous
  batching) with C concurrent HTTP clients (default 16), same WAV files, the ``greedy`` preset; requests/s
  and latency p50/p95. Needs a ``mooer serve`` with ``--engine``; reported as not measured otherwise.

Random weights never emit EOS, so each utterance decodes a fixed number of tokens, the same for both engines:
``--tokens-per-second`` (default 2, as in bench_speed.py: AISHELL-1 speaks ≈2.9 characters/s) times the mean
duration of the job's utterances. The servers get the same fixed budget through the ``greedy`` preset's
``max_new_tokens``, set by the launcher below before ``mooer serve`` starts (a benchmark-only change of the
in-memory preset; the server code is not touched).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from bench_speed import (  # noqa: E402
    SR, base_audio, build_random_mooer, hardware, log, make_waves, measure_bandwidth,
    median, table, timed, wav_files_usable, weight_bytes_per_step)

# `mooer serve` with the greedy preset's budget fixed (random weights never stop by themselves)
LAUNCH = ("import sys; from mooer.decoding import PRESETS; "
          "PRESETS['greedy'] = PRESETS['greedy'].replace(max_new_tokens=int(sys.argv[1])); "
          "from mooer.cli import main; sys.exit(main(sys.argv[2:]))")


def vllm_status() -> tuple[bool, str]:
    """Whether vLLM imports here, and its version or the reason it does not."""
    try:
        from mooer.inference.vllm_engine import require_vllm

        return True, require_vllm()
    except Exception as e:  # noqa: BLE001 - ConfigError from require_vllm, or anything the import raises
        return False, f"{type(e).__name__}: {e}"


def set_threads(n: int) -> None:
    """Keep torch's thread count for the hf runs. vLLM's CPU worker, in this process, binds its OpenMP threads
    and then replaces ``torch.set_num_threads`` by a no-op that logs a warning: call it only when needed (the
    count is recorded per run either way)."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def ids_agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    same_rows = sum(x == y for x, y in zip(a, b))
    prefix = []
    for x, y in zip(a, b):
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        prefix.append(n)
    total = sum(len(x) for x in a)
    same_tok = sum(p == q for x, y in zip(a, b) for p, q in zip(x, y))
    return {"rows_identical": same_rows, "rows": len(a), "tokens_identical": same_tok / total if total else 0.0,
            "mean_identical_prefix": sum(prefix) / len(prefix) if prefix else 0.0,
            "mean_length": total / len(a) if a else 0.0}


# ------------------------------------------------------------------------------------------------ sections


def run_job(models: dict, waves, batch: dict, options, repeats: int, threads: int) -> dict:
    """The N-utterance job on each engine, alternating; median time, utt/s, tokens/s, RTF, agreement."""
    audio_s = sum(len(w) for w in waves) / SR
    times: dict = {name: [] for name in models}
    ids: dict = {}
    threads_seen: dict = {}
    for rep in range(repeats):
        for name, model in models.items():
            set_threads(threads)
            log(f"job: {name}, {len(waves)} utterances, batch {batch[name]} (repeat {rep + 1}/{repeats})")
            t, res = timed(lambda m=model, b=batch[name]: m.transcribe(waves, task="asr", batch_size=b,
                                                                       decoding=options), model.device)
            bad = [r.error for r in res if r.error]
            if bad:
                raise RuntimeError(f"{name}: {bad[0]}")
            times[name].append(t)
            threads_seen.setdefault(name, set()).add(torch.get_num_threads())
            ids[name] = [r.token_ids for r in res]
            log(f"  {t:.1f} s")
    rows = {}
    for name in models:
        t = median(times[name])
        tokens = sum(len(x) for x in ids[name])
        rows[name] = {"batch": batch[name], "times_s": times[name], "median_s": t, "utt_per_s": len(waves) / t,
                      "tokens_per_s": tokens / t, "rtf": t / audio_s, "tokens": tokens,
                      "torch_threads": sorted(threads_seen[name])}
    out = {"n": len(waves), "audio_s": audio_s, "new_tokens": options.max_new_tokens, "engines": rows}
    if "hf" in ids and "vllm" in ids:
        out["ratio"] = rows["hf"]["median_s"] / rows["vllm"]["median_s"]
        out["agreement"] = ids_agreement(ids["hf"], ids["vllm"])
    return out


def decode_bound(models: dict, prompt_len: int, new_tokens: int, repeats: int, threads: int,
                 device: str) -> dict:
    """Each engine's batch-1 decode step from the same prompt of embeddings: (time of 1 + new_tokens tokens −
    time of 1 token) / new_tokens, repeats interleaved across engines, medians; against the bound bandwidth /
    bytes of weights read per step (one bandwidth reading for both)."""
    from mooer.decoding import DecodingOptions

    net = next(iter(models.values())).network
    torch.manual_seed(1)
    embeds = torch.randn(1, prompt_len, net.llm.config.hidden_size, device=net.device, dtype=net.dtype) * 0.02
    mask = torch.ones(1, prompt_len, dtype=torch.bool, device=net.device)
    opts = DecodingOptions(num_beams=1, max_new_tokens=1, length_penalty=1.0, eos_bias=0.0)
    engines = {name: m.pipeline.engine for name, m in models.items()}

    def run(engine, k):
        return timed(lambda: engine.generate(embeds, mask, opts, max_new_tokens=k), net.device)[0]

    for engine in engines.values():
        run(engine, new_tokens + 1)  # warm-up
    t1: dict = {name: [] for name in engines}
    tn: dict = {name: [] for name in engines}
    for rep in range(repeats):
        for name, engine in engines.items():
            set_threads(threads)
            log(f"batch-1 decode step: {name} (repeat {rep + 1}/{repeats})")
            t1[name].append(run(engine, 1))
            tn[name].append(run(engine, new_tokens + 1))
    bandwidth, how = measure_bandwidth(device)
    weight_bytes = weight_bytes_per_step(net.llm)
    out = {}
    for name in engines:
        step = (median(tn[name]) - median(t1[name])) / new_tokens
        out[name] = {"step_s": step, "tokens_per_s": 1 / step, "weight_gb": weight_bytes / 1e9,
                     "bandwidth_tb_s": bandwidth, "bandwidth_how": how,
                     "bound_tokens_per_s": bandwidth * 1e12 / weight_bytes, "prefill_plus_one_s": median(t1[name]),
                     "prompt_len": prompt_len, "new_tokens": new_tokens}
    return out


def run_batch1(models: dict, waves, options, threads: int, prompt_len: int, new_tokens: int, repeats: int,
               device: str) -> dict:
    """End to end one utterance at a time (alternating engines per utterance) and the decode-step bound."""
    audio_s = sum(len(w) for w in waves) / SR
    times: dict = {name: 0.0 for name in models}
    tokens: dict = {name: 0 for name in models}
    for i, w in enumerate(waves):
        for name, model in models.items():
            log(f"batch 1: {name}, utterance {i + 1}/{len(waves)}")
            set_threads(threads)
            t, res = timed(lambda m=model: m.transcribe([w], task="asr", batch_size=1, decoding=options),
                           model.device)
            if res[0].error:
                raise RuntimeError(f"{name}: {res[0].error}")
            times[name] += t
            tokens[name] += len(res[0].token_ids)
    out: dict = {"n": len(waves), "audio_s": audio_s, "engines": {}}
    for name in models:
        out["engines"][name] = {"time_s": times[name], "utt_per_s": len(waves) / times[name],
                                "tokens_per_s": tokens[name] / times[name], "rtf": times[name] / audio_s}
    for name, d in decode_bound(models, prompt_len, new_tokens, repeats, threads, device).items():
        out["engines"][name]["decode"] = d
    return out


# --------------------------------------------------------------------------------------------------- serve


def serve_supports_engine(python: str) -> bool:
    out = subprocess.run([python, "-m", "mooer.cli", "serve", "--help"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    return "--engine" in out.stdout


def run_serve(model, waves, new_tokens: int, engines: list[str], clients: int, per_client: int, rounds: int,
              hf_batch: int, max_num_seqs: int, max_model_len: int, tmp: Path, timeout: float) -> dict:
    """Both servers started side by side; each round runs the clients on one, then the other."""
    import soundfile as sf

    from bench_serve import Level, Server, free_port, run_level

    model_dir = tmp / "model"
    log(f"serve: saving the random model to {model_dir}")
    model.save_pretrained(model_dir)
    clips = []
    for i, w in enumerate(waves):
        path = tmp / f"clip{i:02d}.wav"
        sf.write(path, w, SR, subtype="PCM_16")
        clips.append((path.name, path.read_bytes(), len(w) / SR))

    class FixedBudgetServer(Server):
        """bench_serve's Server (wait/stop), started through LAUNCH with the fixed greedy budget."""

        def __init__(self, engine: str, port: int):
            self.url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, "-c", LAUNCH, str(new_tokens), "serve", "--model", str(model_dir),
                   "--device", "cpu" if model.device.type == "cpu" else str(model.device),
                   "--host", "127.0.0.1", "--port", str(port), "--preset", "greedy", "--engine", engine,
                   "--max-batch-size", str(hf_batch), "--log-level", "warning", "--timeout", str(timeout)]
            if engine == "vllm":
                cmd += ["--max-num-seqs", str(max_num_seqs), "--max-model-len", str(max_model_len)]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                         env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))

    servers = {name: FixedBudgetServer(name, free_port()) for name in engines}
    out: dict = {"clients": clients, "per_client": per_client, "rounds": rounds, "new_tokens": new_tokens,
                 "clips": [(n, round(s, 2)) for n, _, s in clips], "engines": {}}
    try:
        for name, server in servers.items():
            t0 = time.perf_counter()
            server.wait(timeout=900)
            log(f"serve: {name} up in {time.perf_counter() - t0:.0f} s; warm-up")
            for c in clips[:2]:
                run_level(server.url, [c], 1, 1, timeout)
            out["engines"][name] = {"startup_s": time.perf_counter() - t0}
        totals = {name: Level(clients) for name in servers}
        for r in range(rounds):
            for name, server in servers.items():
                log(f"serve: {name}, {clients} clients × {per_client} requests (round {r + 1}/{rounds})")
                level = run_level(server.url, clips, clients, per_client, timeout)
                log(f"  {level.rps:.2f} req/s, p50 {level.pct(50):.1f} s, errors {level.errors}")
                totals[name].merge(level)
        for name, level in totals.items():
            out["engines"][name].update(requests=level.requests, errors=level.errors, wall_s=level.wall_s,
                                        rps=level.rps, p50_s=level.pct(50), p95_s=level.pct(95),
                                        audio_s_per_s=level.audio_s / level.wall_s if level.wall_s else 0.0,
                                        error_samples=level.error_samples)
        if {"hf", "vllm"} <= set(totals):
            out["ratio"] = totals["vllm"].rps / totals["hf"].rps if totals["hf"].rps else float("nan")
    finally:
        for server in servers.values():
            server.stop()
    return out


# ---------------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--llm", choices=["auto", "0.5b", "7b"], default="auto",
                    help="LLM dimensions: auto = 7b on CUDA, 0.5b on CPU")
    ap.add_argument("--n", type=int, help="utterances in the batch job (default: 64 on CPU, 256 on CUDA)")
    ap.add_argument("--hf-batch", type=int, help="hf batch size of the job and the hf server's max batch "
                                                 "(default: 16 on CPU, 32 on CUDA)")
    ap.add_argument("--max-num-seqs", type=int, help="vLLM's max_num_seqs (default: the job's size, at most 256)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of the job per engine, alternating (default: 2)")
    ap.add_argument("--tokens-per-second", type=float, default=2.0, help="decode length per mean audio second")
    ap.add_argument("--batch1", type=int, default=4, help="utterances decoded one at a time (default: 4)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (default: 16)")
    ap.add_argument("--requests", type=int, default=2, help="requests per client per round (default: 2)")
    ap.add_argument("--rounds", type=int, default=2, help="serve rounds per engine, alternating (default: 2)")
    ap.add_argument("--engines", default="hf,vllm", help="comma-separated (default: hf,vllm; vllm is dropped, "
                                                        "with the reason, where it does not import)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: job,batch1,serve")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 utterances, 1 repeat, 4 clients")
    ap.add_argument("--vllm-option", action="append", default=[], metavar="KEY=JSON",
                    help="extra vLLM engine argument (e.g. enforce_eager=true, gpu_memory_utilization=0.5)")
    ap.add_argument("--out", help="also write the Markdown report here")
    ap.add_argument("--json", help="write the raw numbers as JSON here (rewritten after each section)")
    args = ap.parse_args(argv)

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device is available")
    llm_size = args.llm if args.llm != "auto" else ("7b" if cuda else "0.5b")
    q = args.quick
    n = args.n or (8 if q else 256 if cuda else 64)
    hf_batch = args.hf_batch or (32 if cuda else 16)
    skip = set(filter(None, args.skip.split(",")))
    threads = torch.get_num_threads()
    R: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "command": "python benchmarks/bench_vllm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "hardware": hardware(args.device), "torch_threads": threads}
    started = time.perf_counter()

    def save():
        R["total_s"] = time.perf_counter() - started
        if args.json:
            Path(args.json).write_text(json.dumps(R, indent=1, default=str), encoding="utf-8")

    engines = [e for e in args.engines.split(",") if e]
    if "vllm" in engines:
        ok, note = vllm_status()
        R["vllm"] = {"available": ok, "version" if ok else "error": note}
        if not ok:
            log(f"vLLM is not usable here ({note}): measuring hf only")
            engines.remove("vllm")

    rng = random.Random(0)
    secs = [rng.uniform(2, 8) for _ in range(n)]
    base, audio_note = base_audio()
    waves = make_waves(base, secs)
    new_tokens = max(1, round(args.tokens_per_second * sum(secs) / n))
    from mooer.decoding import get_preset

    options = get_preset("greedy").replace(max_new_tokens=new_tokens)
    R["audio"] = {"source": audio_note, "n": n, "seconds": [min(secs), max(secs)], "total_s": sum(secs)}
    R["decode"] = {"preset": "greedy", "new_tokens": new_tokens, "tokens_per_second": args.tokens_per_second}

    log(f"building the MooER-shaped random model ({llm_size}) on {args.device}")
    t, (hf_model, minfo) = timed(lambda: build_random_mooer(args.device, llm_size, None), args.device)
    minfo["build_s"] = t
    R["model"] = minfo
    models = {"hf": hf_model}
    # prompt positions: audio tokens of the longest utterance (16 kHz → 100 frames/s → LFR /6 → adapter /2)
    # + the chat prompt (< 64); the budget on top
    max_model_len = int(max(secs) * 100 / 6 / 2) + 64 + new_tokens + 16
    max_num_seqs = args.max_num_seqs or min(n, 256)
    if "vllm" in engines:
        from mooer.api import MooER

        # vLLM's CPU worker drops torch to 1 thread for serving unless OMP_NUM_THREADS is set; keep the hf
        # engine's count for both (they share this process)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        extra = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.vllm_option)}
        if cuda:
            extra.setdefault("gpu_memory_utilization", 0.5)  # the hf copy of the model shares the GPU
        engine_options = dict(max_num_seqs=max_num_seqs, max_model_len=max_model_len, **extra)
        R["vllm"]["engine_options"] = engine_options
        models["vllm"] = MooER(hf_model.loaded, engine="vllm", engine_options=engine_options)
        log("vllm: preparing the merged LLM and starting the engine")
        warm = make_waves(base, [3.0])
        t, _ = timed(lambda: models["vllm"].transcribe(warm, task="asr", batch_size=1, decoding=options), dev)
        R["vllm"]["startup_s"] = t
        R["vllm"]["torch_threads_after_start"] = torch.get_num_threads()
        R["vllm"]["cpu_affinity_after_start"] = sorted(os.sched_getaffinity(0))
        log(f"vllm up in {t:.0f} s (torch threads {torch.get_num_threads()}, affinity {sorted(os.sched_getaffinity(0))})")
    set_threads(threads)
    models["hf"].transcribe(make_waves(base, [3.0]), task="asr", batch_size=1, decoding=options)  # warm-up
    save()

    if "job" not in skip:
        R["job"] = run_job(models, waves, {"hf": hf_batch, "vllm": n}, options, 1 if q else args.repeats, threads)
        save()
    if "batch1" not in skip:
        log("batch 1")
        R["batch1"] = run_batch1(models, waves[: 2 if q else args.batch1], options, threads, prompt_len=100,
                                 new_tokens=8 if q else 16, repeats=2 if q else 3, device=args.device)
        save()
    if "serve" not in skip:
        reason = None
        if not wav_files_usable():
            reason = "soundfile is missing (needed to write the WAV uploads)"
        elif "vllm" in engines and not serve_supports_engine(sys.executable):
            reason = "this checkout's `mooer serve` has no --engine option yet"
        if reason:
            R["serve"] = {"not_measured": reason}
            log(f"serve: not measured: {reason}")
        else:
            with tempfile.TemporaryDirectory(prefix="mooer-bench-vllm-") as tmp:
                clip_waves = make_waves(base, secs[:8])
                R["serve"] = run_serve(hf_model, clip_waves, new_tokens, engines, 4 if q else args.clients,
                                       1 if q else args.requests, 1 if q else args.rounds, hf_batch,
                                       min(max_num_seqs, 4 if q else args.clients), max_model_len, Path(tmp),
                                       timeout=1800.0)
        save()
    R["hardware"]["load_average_end"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    save()
    report = render(R)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    print(report)
    for model in models.values():
        with contextlib.suppress(Exception):
            close = getattr(model.pipeline.engine, "close", None)
            if close:
                close()
    return 0


def vllm_note(v: dict | None) -> str:
    if v is None:
        return "not asked for (--engines)"
    return v["version"] if v["available"] else f"NOT USABLE here, hf measured alone: {v['error']}"


def render(R: dict) -> str:
    hw, m = R["hardware"], R["model"]
    L = [f"`{R['command']}` — {R['date']}, {R['total_s']:.0f} s in all.", "",
         f"- Hardware: {hw['cpu']}, {hw['cores']} cores, {hw.get('memory_gb', '?')} GB"
         + (f"; GPU {hw['gpu']} ({hw['gpu_memory_gb']} GB)" if "gpu" in hw else "")
         + f"; torch {hw['torch']}, transformers {hw['transformers']}, {R['torch_threads']} torch threads; load "
           f"average {hw.get('load_average', '?')} at the start, {hw.get('load_average_end', '?')} at the end.",
         f"- vLLM: {vllm_note(R.get('vllm'))}"
         + (f", engine options {R['vllm']['engine_options']}, started in {R['vllm']['startup_s']:.0f} s"
            if "startup_s" in R.get("vllm", {}) else ""),
         f"- Model: MooER-shaped, random weights, LLM with Qwen2-{m['llm']} dimensions "
         f"({m['params_llm'] / 1e6:.0f} M params), {m['dtype']}; `greedy` preset, "
         f"{R['decode']['new_tokens']} new tokens per utterance (random weights never emit EOS).",
         f"- Audio: {R['audio']['n']} utterances of {R['audio']['seconds'][0]:.1f}–{R['audio']['seconds'][1]:.1f} s "
         f"({R['audio']['total_s']:.0f} s), {R['audio']['source']}.", ""]
    if "job" in R:
        j = R["job"]
        rows = [(name, e["batch"], len(e["times_s"]), e["median_s"], e["utt_per_s"], e["tokens_per_s"], e["rtf"],
                 f"{j['engines']['hf']['median_s'] / e['median_s']:.2f}×" if "hf" in j["engines"] else "–")
                for name, e in j["engines"].items()]
        L += [f"### Batch job: {j['n']} utterances", "",
              table(["engine", "batch", "runs", "time s (median)", "utt/s", "gen tokens/s", "RTF", "speed vs hf"],
                    rows), ""]
        if "agreement" in j:
            a = j["agreement"]
            L += [f"hf vs vllm ids: {a['rows_identical']}/{a['rows']} rows identical, "
                  f"{100 * a['tokens_identical']:.0f} % of tokens, mean identical prefix "
                  f"{a['mean_identical_prefix']:.1f} of {a['mean_length']:.1f} tokens.", ""]
        L += ["torch threads during the runs: " + ", ".join(f"{name} {e.get('torch_threads')}"
                                                           for name, e in j["engines"].items()) + ".", ""]
    if "batch1" in R:
        b = R["batch1"]
        rows = []
        for name, e in b["engines"].items():
            d = e["decode"]
            rows.append((name, e["utt_per_s"], e["tokens_per_s"], e["rtf"], f"{1000 * d['step_s']:.1f}",
                         d["tokens_per_s"], d["bound_tokens_per_s"], f"{100 * d['tokens_per_s'] / d['bound_tokens_per_s']:.0f} %"))
        d0 = next(iter(b["engines"].values()))["decode"]
        L += [f"### Batch 1: {b['n']} utterances one at a time; decode step after a {d0['prompt_len']}-position prompt",
              "", table(["engine", "utt/s", "gen tokens/s", "RTF", "decode step ms", "decode tokens/s",
                         "bound tokens/s", "of bound"], rows), "",
              f"Bound = bandwidth / bytes of weights read per step ({d0['weight_gb']:.2f} GB; bandwidth "
              f"{1000 * d0['bandwidth_tb_s']:.1f} GB/s, {d0['bandwidth_how']}).", ""]
    if "serve" in R:
        s = R["serve"]
        if "not_measured" in s:
            L += ["### Server", "", f"Not measured: {s['not_measured']}.", ""]
        else:
            rows = [(name, s["clients"], e["requests"], e["errors"], e["rps"], e["audio_s_per_s"], e["p50_s"],
                     e["p95_s"], f"{e['rps'] / s['engines']['hf']['rps']:.2f}×" if "hf" in s["engines"] else "–")
                    for name, e in s["engines"].items()]
            L += [f"### `mooer serve`: {s['clients']} concurrent clients, {s['per_client']} requests each × "
                  f"{s['rounds']} rounds, {len(s['clips'])} clips of "
                  f"{min(c[1] for c in s['clips'])}–{max(c[1] for c in s['clips'])} s", "",
                  table(["engine", "clients", "requests", "errors", "req/s", "audio s/s", "p50 s", "p95 s",
                         "req/s vs hf"], rows), ""]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
