"""Load test of ``mooer serve``: throughput and latency against the number of concurrent clients.

Starts ``mooer serve`` as a subprocess on a free 127.0.0.1 port (loopback only), then for each
concurrency level N runs N client threads, each sending M transcription requests one after another
(bounded: N*M requests per level) to ``POST /v1/audio/transcriptions`` with the fixture clips in turn.
It reports requests/s, audio seconds per second, p50/p95/p99 latency, errors (must be 0), the mean batch
size the server's micro-batcher formed (from ``/health``) and the server's RSS before and after.

    python benchmarks/bench_serve.py                                   # tiny fixture model, 1..16 clients
    python benchmarks/bench_serve.py --model pretrained_models --requests 4 --concurrency 1,4,16
    python benchmarks/bench_serve.py --compare-unbatched --output benchmarks/RESULTS_serve.md

``--compare-unbatched`` also starts a server with ``--max-batch-size 1`` (requests queue one by one) and
runs each level on both servers in turn, to show what batching buys. Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# The golden fixtures: in the repository (tests/fixtures) when present, else the shared checkout beside it.
_IN_REPO = ROOT / "tests" / "fixtures"
FIXTURES = _IN_REPO if _IN_REPO.is_dir() else ROOT.parent / "shared" / "fixtures"
DEFAULT_MODEL = FIXTURES / "official-tiny"
DEFAULT_CLIPS = [FIXTURES / "audio" / f"{c}.wav" for c in ("zh1", "zh2", "en1", "short", "demo")]


@dataclass
class Level:
    concurrency: int
    requests: int = 0
    errors: int = 0
    wall_s: float = 0.0
    audio_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    batches: int = 0
    batched_requests: int = 0
    error_samples: list[str] = field(default_factory=list)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs) + 0.5) - 1))]

    def merge(self, other: "Level") -> None:
        """Add another round at the same concurrency (times and counts add up)."""
        self.requests += other.requests
        self.errors += other.errors
        self.wall_s += other.wall_s
        self.audio_s += other.audio_s
        self.latencies += other.latencies
        self.batches += other.batches
        self.batched_requests += other.batched_requests
        self.error_samples += other.error_samples[: max(0, 3 - len(self.error_samples))]

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.wall_s if self.wall_s else 0.0

    @property
    def mean_batch(self) -> float:
        return self.batched_requests / self.batches if self.batches else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wav_seconds(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


class Server:
    def __init__(self, model: str, port: int, max_batch_size: int, window_ms: float, max_audio: float,
                 extra: list[str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "mooer.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--max-batch-size", str(max_batch_size), "--batch-window-ms", str(window_ms),
               "--max-audio-seconds", str(max_audio), "--log-level", "warning"]
        if model:
            cmd += ["--model", model]
        cmd += extra or []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("status") == "ok":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()["batcher"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_level(url: str, clips: list[tuple[str, bytes, float]], concurrency: int, per_client: int,
              timeout: float) -> Level:
    level = Level(concurrency)
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            start.wait()
            for j in range(per_client):
                name, data, seconds = clips[(index + j * concurrency) % len(clips)]
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/audio/transcriptions", files={"file": (name, data)},
                                  data={"model": "mooer"})
                    ok = r.status_code == 200 and "text" in r.json()
                    err = None if ok else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    err = repr(e)
                dt_ = time.perf_counter() - t0
                with lock:
                    level.requests += 1
                    if err is None:
                        level.latencies.append(dt_)
                        level.audio_s += seconds
                    else:
                        level.errors += 1
                        if len(level.error_samples) < 3:
                            level.error_samples.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    level.wall_s = time.perf_counter() - t0
    return level


def run_servers(args: argparse.Namespace, clips, configs: list[tuple[str, int]]) -> list[tuple[str, list[Level], dict]]:
    """Start one server per (label, max batch size); run every level on each in turn (interleaved, so a
    shared machine's load drifts alike for all of them)."""
    servers = [(label, Server(args.model, free_port(), size, args.batch_window_ms, args.max_audio_seconds), size)
               for label, size in configs]
    try:
        mem: dict[str, dict] = {}
        for label, server, size in servers:
            server.wait()
            start = rss_mb(server.proc.pid)
            for name, data, _ in clips:  # warm-up (first-call allocations, lazy imports)
                httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": (name, data)},
                           timeout=args.timeout)
            mem[label] = {"rss_start_mb": start, "rss_before_mb": rss_mb(server.proc.pid), "max_batch_size": size}
        levels: dict[str, list[Level]] = {label: [] for label, _, _ in servers}
        for c in args.concurrency:
            total = {label: Level(c) for label, _, _ in servers}
            for _ in range(args.rounds):
                for label, server, _ in servers:
                    before = server.stats()
                    level = run_level(server.url, clips, c, args.requests, args.timeout)
                    after = server.stats()
                    level.batches = after["batches"] - before["batches"]
                    level.batched_requests = after["completed"] - before["completed"]
                    total[label].merge(level)
            for label, _, _ in servers:
                level = total[label]
                levels[label].append(level)
                print(f"[{label}] {c:>3} clients: {level.rps:6.2f} req/s  p50 {level.pct(50):6.3f} s  "
                      f"p95 {level.pct(95):6.3f} s  mean batch {level.mean_batch:4.2f}  errors {level.errors}",
                      file=sys.stderr, flush=True)
        for label, server, _ in servers:
            mem[label]["rss_after_mb"] = rss_mb(server.proc.pid)
        return [(label, levels[label], mem[label]) for label, _, _ in servers]
    finally:
        for _, server, _ in servers:
            server.stop()


def table(levels: list[Level]) -> str:
    head = ("| clients | requests | errors | wall s | req/s | audio s/s | p50 s | p95 s | p99 s | mean batch |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = [f"| {lv.concurrency} | {lv.requests} | {lv.errors} | {lv.wall_s:.2f} | {lv.rps:.2f} | "
            f"{lv.audio_s / lv.wall_s if lv.wall_s else 0:.2f} | {lv.pct(50):.3f} | {lv.pct(95):.3f} | "
            f"{lv.pct(99):.3f} | {lv.mean_batch:.2f} |" for lv in levels]
    return head + "\n".join(rows) + "\n"


def hardware() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()}-core CPU ({cpu}), no GPU; Python {platform.python_version()}, torch "
            f"{torch.__version__}, {torch.get_num_threads()} torch threads; 1-min load average at the end "
            f"{load:.2f} (the machine is shared, so absolute numbers are noisy)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL) if DEFAULT_MODEL.is_dir() else "",
                   help="model directory (default: the tiny official-layout fixture; '' = bundled model)")
    p.add_argument("--clips", nargs="*", type=Path, default=DEFAULT_CLIPS, help="wav files sent in turn")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16])
    p.add_argument("--requests", type=int, default=8, help="requests per client per level (default: 8)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds per level, alternating between servers; numbers are pooled (default: 3)")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-window-ms", type=float, default=20.0)
    p.add_argument("--max-audio-seconds", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--compare-unbatched", action="store_true", help="also run with --max-batch-size 1")
    p.add_argument("--output", type=Path, help="write the results as Markdown here")
    args = p.parse_args()
    if not 1 <= args.requests <= 100 or not 1 <= args.rounds <= 20:
        p.error("--requests must be in 1..100 and --rounds in 1..20")
    clips = [(c.name, c.read_bytes(), wav_seconds(c)) for c in args.clips]

    configs = [("batched", args.max_batch_size)] + ([("unbatched", 1)] if args.compare_unbatched else [])
    runs = run_servers(args, clips, configs)

    model_name = args.model or "bundled default model"
    lines = [
        "# `mooer serve` load test\n",
        f"Measured {dt.date.today().isoformat()} with `benchmarks/bench_serve.py` "
        f"(`--requests {args.requests} --rounds {args.rounds} --concurrency {','.join(map(str, args.concurrency))}"
        f"{' --clips ' + ' '.join(c.name for c in args.clips) if args.clips != DEFAULT_CLIPS else ''}"
        f"{' --compare-unbatched' if args.compare_unbatched else ''}`).\n",
        f"- Hardware: {hardware()}.",
        f"- Model: `{Path(model_name).name if args.model else model_name}` "
        f"(fp32 on CPU), `official` preset (beam 4, up to 200 new tokens).",
        f"- Requests: `POST /v1/audio/transcriptions` (task asr) over loopback, clips "
        f"{', '.join(f'{n} ({s:.1f} s)' for n, _, s in clips)} in turn; each of N clients sends "
        f"{args.requests} requests back to back; {args.rounds} rounds per level, alternating between the servers, "
        f"pooled (req/s = all requests / all wall time).",
        f"- Batching: window {args.batch_window_ms:g} ms; \"mean batch\" = requests per model call.\n",
    ]
    failed = 0
    for label, levels, mem in runs:
        failed += sum(lv.errors for lv in levels)
        lines.append(f"## {label} (max batch size {mem['max_batch_size']})\n")
        lines.append(table(levels))
        lines.append(f"Server RSS: {mem['rss_start_mb']:.0f} MB after start, {mem['rss_before_mb']:.0f} MB after "
                     f"warm-up, {mem['rss_after_mb']:.0f} MB after the run.\n")
        for lv in levels:
            for e in lv.error_samples:
                lines.append(f"- error at {lv.concurrency} clients: `{e}`")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
