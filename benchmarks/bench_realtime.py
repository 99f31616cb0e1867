"""Live transcription (``/v1/realtime``) under load: latency, concurrency, and exactness.

Starts ``mooer serve`` (the bundled demo model unless ``--model``) in a subprocess and streams, at real
time in 100 ms chunks, a recording of four sentences (the bundled zh and en samples, twice, 1.2 s pauses,
light noise) from N concurrent clients, for N = 1, 2, 4, ... until the 95th percentile latency passes the
limit (2 s). Measured per sentence:

* end of speech -> final result: from the moment the client sent the chunk holding the sentence's last
  speech sample (found by energy) to the arrival of its ``completed`` event. It includes the VAD's wait for
  the pause (``silence_duration_ms``, 500 ms by default), queueing behind other sessions, and decoding;
* speech_stopped -> final: the same, after the server decided the sentence was over (decoding and queueing);
* exactness: every final text is compared with offline decoding (``MooER.transcribe``, the server's preset)
  of the same samples, i.e. what ``mooer transcribe`` gives for the segment the server reported;
* cost, which does not depend on what else runs on the machine: the server process's CPU time and the
  model thread's busy time (``/health`` batcher ``model_seconds``) per second of streamed audio. The model
  thread is one thread, so ``1 / model share`` bounds the number of real-time streams on any machine like
  this one; the CPU share says how many cores the streams keep busy.

Interim results are on (the server's default, 1 s; ``--interim-ms 0`` turns them off): they are part of
the load a live server carries.

    python benchmarks/bench_realtime.py                 # about 3 minutes on a 2-core CPU
    python benchmarks/bench_realtime.py --levels 1 4 8 --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SR = 16000
CHUNK = 1600  # 100 ms
COMPLETED = "conversation.item.input_audio_transcription.completed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speech_span(x: np.ndarray) -> tuple[int, int]:
    """First and last+1 sample of 10 ms frames louder than -40 dBFS."""
    hop = SR // 100
    frames = x[: x.size // hop * hop].astype(np.float64).reshape(-1, hop) / 32768.0
    loud = np.flatnonzero(10 * np.log10(np.mean(frames**2, axis=1) + 1e-12) > -40.0)
    return int(loud[0] * hop), int((loud[-1] + 1) * hop)


def recording(seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """int16 PCM and the (start, end) sample of each sentence's speech."""
    import soundfile as sf

    from mooer.assets import sample_path

    clips = [sf.read(sample_path(n), dtype="int16")[0] for n in ("sample_zh.wav", "sample_en.wav")] * 2
    rng = np.random.default_rng(seed)
    parts, spans, pos = [np.zeros(SR, np.int16)], [], SR
    for clip in clips:
        a, b = speech_span(clip)
        spans.append((pos + a, pos + b))
        pause = np.zeros(int(1.2 * SR), np.int16)
        parts += [clip, pause]
        pos += clip.size + pause.size
    parts.append(np.zeros(int(0.3 * SR), np.int16))
    audio = np.concatenate(parts).astype(np.float64)
    audio += rng.normal(0, 0.003 * 32768, audio.size)  # about -50 dBFS of noise
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16), spans


async def one_stream(url: str, pcm: np.ndarray, spans: list[tuple[int, int]], delay: float) -> dict:
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    events: list[tuple[float, dict]] = []
    async with connect(url, subprotocols=["realtime"], max_size=None) as ws:
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": {"type": "audio/pcm", "rate": SR}}}))

        async def reader() -> None:
            async for message in ws:
                events.append((time.monotonic(), json.loads(message)))

        task = asyncio.create_task(reader())
        t0 = time.monotonic()
        sent_at = []
        for k, i in enumerate(range(0, pcm.size, CHUNK)):
            ahead = t0 + k * CHUNK / SR - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(pcm[i : i + CHUNK].tobytes()).decode()}))
            sent_at.append(time.monotonic())
        deadline = time.monotonic() + 60
        while sum(e["type"] == COMPLETED for _, e in events) < len(spans) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
    finals = [(t, e) for t, e in events if e["type"] == COMPLETED]
    stopped = {e["item_id"]: t for t, e in events if e["type"] == "input_audio_buffer.speech_stopped"}
    rows = []
    for a, b in spans:
        match = [(t, e) for t, e in finals if e["audio_start_ms"] * 16 <= a and e["audio_end_ms"] * 16 >= b - CHUNK]
        spoken = sent_at[min((b - 1) // CHUNK, len(sent_at) - 1)]
        if len(match) != 1:
            rows.append({"matched": False})
            continue
        t, e = match[0]
        rows.append({"matched": True, "latency": t - spoken, "after_stop": t - stopped.get(e["item_id"], t),
                     "start_ms": e["audio_start_ms"], "end_ms": e["audio_end_ms"], "text": e["transcript"]})
    errors = [e for _, e in events if e["type"] in ("error", "conversation.item.input_audio_transcription.failed")]
    return {"rows": rows, "finals": len(finals), "errors": errors,
            "interims": sum(e["type"].endswith("transcription.delta") for _, e in events)}


async def level(url: str, n: int) -> list[dict]:
    rng = np.random.default_rng(n)
    streams = [recording(seed=1000 * n + i) for i in range(n)]
    results = await asyncio.gather(*(one_stream(url, pcm, spans, float(rng.uniform(0, 1.0)))
                                     for pcm, spans in streams))
    for (pcm, _), result in zip(streams, results):
        result["pcm"] = pcm
    return results


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: the bundled demo model)")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16, 24, 32])
    ap.add_argument("--limit", type=float, default=2.0, help="p95 latency that ends the ramp (seconds)")
    ap.add_argument("--interim-ms", type=int, default=1000, help="interim interval of the server (0 = none)")
    ap.add_argument("--out", help="write the measurements as JSON")
    args = ap.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "mooer.cli", "serve", "--port", str(port), "--log-level", "warning",
           "--realtime-interim-ms", str(args.interim_ms)]
    if args.model:
        cmd += ["--model", args.model]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    import httpx

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.5)
        url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
        asyncio.run(level(url, 1))  # warm-up: VAD and model first calls
        table, kept = [], []
        health = f"http://127.0.0.1:{port}/health"
        for n in args.levels:
            started = time.monotonic()
            cpu0, model0 = cpu_seconds(server.pid), httpx.get(health).json()["batcher"]["model_seconds"]
            results = asyncio.run(level(url, n))
            cpu1, model1 = cpu_seconds(server.pid), httpx.get(health).json()["batcher"]["model_seconds"]
            audio_s = sum(r["pcm"].size for r in results) / SR
            rows = [r for res in results for r in res["rows"]]
            lat = [r["latency"] for r in rows if r["matched"]]
            after = [r["after_stop"] for r in rows if r["matched"]]
            entry = {"streams": n, "sentences": len(rows), "matched": len(lat),
                     "p50": percentile(lat, 50), "p95": percentile(lat, 95), "max": max(lat, default=float("nan")),
                     "after_stop_p50": percentile(after, 50), "after_stop_p95": percentile(after, 95),
                     "interims": sum(r["interims"] for r in results),
                     "errors": sum(len(r["errors"]) for r in results), "wall_s": time.monotonic() - started,
                     "cpu_per_audio_s": (cpu1 - cpu0) / audio_s, "model_per_audio_s": (model1 - model0) / audio_s,
                     "load_avg": os.getloadavg()[0]}
            table.append(entry)
            kept.append(results)
            print(f"{n:3d} streams: p50 {entry['p50']:.2f} s, p95 {entry['p95']:.2f} s (after stop p50 "
                  f"{entry['after_stop_p50']:.2f} s, p95 {entry['after_stop_p95']:.2f} s), {entry['matched']}/"
                  f"{entry['sentences']} sentences, {entry['interims']} interims, {entry['errors']} errors; "
                  f"server CPU {entry['cpu_per_audio_s']:.3f} s and model thread {entry['model_per_audio_s']:.3f} s "
                  f"per audio second; load average {entry['load_avg']:.1f}", flush=True)
            if not entry["p95"] <= args.limit or entry["matched"] < entry["sentences"]:
                break
    finally:
        server.terminate()
        server.wait(30)

    # exactness: offline decoding of the samples each final result covers (the server is gone: no contention)
    from mooer.api import MooER

    model = MooER.from_pretrained(args.model)
    checked = equal = 0
    for results in kept:
        for res in results:
            wave = res["pcm"].astype(np.float32) / 32768.0
            rows = [r for r in res["rows"] if r["matched"]]
            texts = [r.text for r in model.transcribe([wave[r["start_ms"] * 16 : r["end_ms"] * 16] for r in rows],
                                                      task="asr")]
            checked += len(rows)
            equal += sum(t == r["text"] for t, r in zip(texts, rows))
    sustained = [e["streams"] for e in table if e["p95"] <= args.limit and e["matched"] == e["sentences"]]
    print()
    print("| streams | sentences | end of speech → final p50 / p95 / max (s) | speech_stopped → final p50 / p95 (s) "
          "| interims | errors | server CPU / audio s | model thread / audio s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for e in table:
        print(f"| {e['streams']} | {e['matched']}/{e['sentences']} | {e['p50']:.2f} / {e['p95']:.2f} / {e['max']:.2f} "
              f"| {e['after_stop_p50']:.2f} / {e['after_stop_p95']:.2f} | {e['interims']} | {e['errors']} "
              f"| {e['cpu_per_audio_s']:.3f} | {e['model_per_audio_s']:.3f} | {e['load_avg']:.1f} |")
    print(f"\nsustained at p95 <= {args.limit:g} s: {max(sustained, default=0)} concurrent real-time streams")
    print(f"final texts equal to offline decoding of the same samples: {equal}/{checked}")
    if args.out:
        Path(args.out).write_text(json.dumps({"levels": table, "exact": [equal, checked],
                                              "cpu_count": os.cpu_count()}, indent=1))
    return 0 if equal == checked else 1


if __name__ == "__main__":
    sys.exit(main())
