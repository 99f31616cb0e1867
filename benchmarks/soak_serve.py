"""Soak test of ``mooer serve``: resident memory per minute under sustained load, and the queue bound.

Starts ``mooer serve`` on a free 127.0.0.1 port (loopback only) and keeps ``--clients`` client threads
sending transcription requests back to back for ``--minutes`` minutes (bounded in count and time; it stops
by itself). A client that gets 503 waits ``Retry-After`` seconds, as OpenAI's clients do. Each minute it
records the server's RSS, the requests answered and refused, and the latency of the accepted ones.

It reports the RSS growth after warm-up — (last minute − end of warm-up) / end of warm-up — which should
stay under 10 %, and the p50/p99 latency of accepted requests against the queue bound.

    python benchmarks/soak_serve.py                          # bundled demo model, 64 clients, 30 minutes
    python benchmarks/soak_serve.py --minutes 5 --clients 16 --output benchmarks/RESULTS_soak.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import Server, free_port, hardware, rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "mooer" / "assets"


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs) + 0.5) - 1))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model directory (default: the bundled demo model)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--warmup-minutes", type=float, default=3.0)
    p.add_argument("--max-queued-audio", type=float, default=60.0, help="the server's queue bound (audio seconds)")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--output", type=Path, help="also write the report (Markdown) here")
    args = p.parse_args()

    clips = [(c.name, c.read_bytes()) for c in sorted(ASSETS.glob("sample_*.wav"))]
    port = free_port()
    server = Server(args.model, port, args.max_batch_size, 20.0, 600.0,
                    extra=["--max-queued-audio", str(args.max_queued_audio), "--timeout", "600"])
    server.wait()
    pid = server.proc.pid
    stop = threading.Event()
    lock = threading.Lock()
    minute: dict[str, list] = {"ok": [], "busy": [], "errors": []}

    def client(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=600) as http:
            n = index
            while not stop.is_set():
                name, data = clips[n % len(clips)]
                n += 1
                t0 = time.monotonic()
                try:
                    r = http.post("/v1/audio/transcriptions", files={"file": (name, data)})
                except httpx.HTTPError as e:
                    with lock:
                        minute["errors"].append(repr(e))
                    continue
                seconds = time.monotonic() - t0
                with lock:
                    if r.status_code == 200:
                        minute["ok"].append(seconds)
                    elif r.status_code == 503:
                        minute["busy"].append(seconds)
                    else:
                        minute["errors"].append(f"{r.status_code} {r.text[:100]}")
                if r.status_code == 503:
                    stop.wait(float(r.headers.get("retry-after", "1")))

    rows = []
    started = time.monotonic()
    base_rss = rss_mb(pid)
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    try:
        total = int(round(args.minutes))
        for m in range(1, total + 1):
            stop.wait(max(0.0, started + 60 * m - time.monotonic()))
            with lock:
                ok, busy, errors = minute["ok"], minute["busy"], minute["errors"]
                minute.update(ok=[], busy=[], errors=[])
            row = {"minute": m, "rss_mb": rss_mb(pid), "ok": len(ok), "busy": len(busy), "errors": len(errors),
                   "p50": percentile(ok, 50), "p99": percentile(ok, 99),
                   "busy_max_s": max(busy) if busy else float("nan")}
            rows.append(row)
            print(f"[{m:3d} min] RSS {row['rss_mb']:.0f} MB, {len(ok)} ok (p50 {row['p50']:.1f} s, p99 "
                  f"{row['p99']:.1f} s), {len(busy)} refused, {len(errors)} errors", file=sys.stderr, flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(620)
        health = server.stats()
        server.stop()

    warm = [r for r in rows if r["minute"] <= args.warmup_minutes]
    after = [r for r in rows if r["minute"] > args.warmup_minutes]
    ref = warm[-1]["rss_mb"] if warm else base_rss
    growth = (rows[-1]["rss_mb"] - ref) / ref if rows else float("nan")
    peak_after = max((r["rss_mb"] for r in after), default=float("nan"))
    ok_all = sum(r["ok"] for r in rows)
    lines = [
        f"# Soak test of `mooer serve` ({dt.date.today()})", "",
        f"{hardware()}. Model: {args.model or 'bundled demo model'}; {args.clients} clients back to back for "
        f"{args.minutes:g} min; queue bound {args.max_queued_audio:g} s of audio; batch <= {args.max_batch_size}.",
        "", f"RSS at start {base_rss:.0f} MB, after {args.warmup_minutes:g} min warm-up {ref:.0f} MB, at the end "
        f"{rows[-1]['rss_mb']:.0f} MB (peak after warm-up {peak_after:.0f} MB): **growth after warm-up "
        f"{100 * growth:+.1f} %**.", "",
        f"{ok_all} requests answered, {sum(r['busy'] for r in rows)} refused with 503 + Retry-After, "
        f"{sum(r['errors'] for r in rows)} errors. Batches: {health.get('batches')} "
        f"(histogram {health.get('batch_size_histogram')}).", "",
        "| minute | RSS MB | answered | p50 s | p99 s | refused | slowest refusal s | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['minute']} | {r['rss_mb']:.0f} | {r['ok']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                     f"{r['busy']} | {r['busy_max_s']:.2f} | {r['errors']} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    return 0 if rows and not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
