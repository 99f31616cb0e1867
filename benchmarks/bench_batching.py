"""Training throughput and padding: the official fixed-size batches vs duration-bucketed dynamic batches.

Same data, same model, same amount of audio per batch on average: the fixed sampler takes ``--batch-size``
utterances in random order (the original recipe); the dynamic sampler fills ``batch-size × mean duration``
seconds from duration buckets. Each timed step is a real training step (forward, backward, AdamW) of the
bundled demo model on CPU. Rounds alternate between the two samplers (this machine is noisy); medians.

    python benchmarks/bench_batching.py                           # synthetic corpus of recipes/synthetic
    python benchmarks/bench_batching.py --manifest train.jsonl --utterances 2000 --steps 12 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mooer.api import MooER
from mooer.data.dataset import SpeechDataset, TaskMix, collate
from mooer.data.manifest import read_manifest
from mooer.data.sampler import DynamicBucketSampler, FixedSizeSampler, padding_fraction

ROOT = Path(__file__).resolve().parents[1]


def batches(sampler, epoch: int, count: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    out = []
    for b in sampler:
        out.append(b)
        if len(out) == count:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default=str(ROOT / "recipes/synthetic/data/train.jsonl"))
    ap.add_argument("--utterances", type=int, default=2000, help="utterances drawn from the manifest")
    ap.add_argument("--batch-size", type=int, default=8, help="fixed batch size (the official 8)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per sampler per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    utts = read_manifest(args.manifest).utterances
    utts = utts[:: max(1, len(utts) // args.utterances)][: args.utterances]
    mooer = MooER.from_pretrained(device="cpu", dtype="float32")
    dataset = SpeechDataset(utts, mooer.features, mooer.prompts, TaskMix({"asr": 1.0}))
    durations = [u.duration for u in utts]
    mean = statistics.mean(durations)
    samplers = {
        f"fixed ({args.batch_size} utt)": FixedSizeSampler(len(utts), args.batch_size, seed=0),
        f"dynamic ({args.batch_size * mean:.1f} s)": DynamicBucketSampler(durations, max_seconds=args.batch_size * mean,
                                                                         seed=0),
    }
    model = mooer.network.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    stats = {name: {"times": [], "utts": 0, "secs": 0.0, "frames_pad": [], "tokens_pad": [], "batches": 0}
             for name in samplers}
    for r in range(args.rounds):
        for name, sampler in samplers.items():
            for idx in batches(sampler, r, args.steps):
                batch = collate([dataset[i] for i in idx], pad_id=mooer.prompts.pad_id)
                t0 = time.perf_counter()
                out = model(batch.features, batch.lengths, batch.tokens)
                out.loss.backward()
                optim.step()
                optim.zero_grad(set_to_none=True)
                s = stats[name]
                s["times"].append(time.perf_counter() - t0)
                s["utts"] += len(batch)
                s["secs"] += batch.audio_seconds
                s["frames_pad"].append(batch.padding_fraction)
                s["tokens_pad"].append(1 - batch.tokens.attention_mask.float().mean().item())
                s["batches"] += 1

    print("# training-step throughput: fixed vs dynamic batching\n")
    print(f"- {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s); model: bundled demo model (7.9 M parameters, fp32)")
    print(f"- data: {len(utts)} utterances of {args.manifest} (mean {mean:.2f} s, min {min(durations):.2f} s, "
          f"max {max(durations):.2f} s); {args.rounds} alternating rounds × {args.steps} steps per sampler\n")
    print("| sampler | steps | utt/step | utt/s | audio s/s | frame padding | token padding | relative utt/s |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for name, s in stats.items():
        total = sum(s["times"])
        utt_s = s["utts"] / total
        base = base or utt_s
        print(f"| {name} | {s['batches']} | {s['utts'] / s['batches']:.1f} | {utt_s:.1f} | {s['secs'] / total:.1f} | "
              f"{statistics.mean(s['frames_pad']):.1%} | {statistics.mean(s['tokens_pad']):.1%} | {utt_s / base:.2f}× |")
    print(f"\n(padding_fraction of the whole epoch's batches — fixed: "
          f"{statistics.mean(padding_fraction([durations[i] for i in b]) for b in batches(samplers[next(iter(samplers))], 0, 10**9)):.1%}, "
          f"dynamic: {statistics.mean(padding_fraction([durations[i] for i in b]) for b in batches(list(samplers.values())[1], 0, 10**9)):.1%})")


if __name__ == "__main__":
    main()
