"""Decoding speed with hotword lists of 10, 100 and 1,000 phrases against none, in one run.

The bundled demo model decodes the same utterances (the first ``--utterances`` of the recipe's ordinary
test split, zh and en, which speak none of the phrases) with each list; rounds alternate between the lists
(this machine is shared and noisy); each list's fastest and median runs are compared with those without
hotwords. Because other jobs' load swings the wall times by more than the booster costs, the time spent
inside the booster itself (``HotwordBooster.__call__``, timed in the same runs) is reported as a share of
the decoding time: the overhead that load cannot blur. Decoding steps are counted as well (the calls of the
engine's log-prob recorder, one per step): biasing can change how long beam search runs and what it
writes, so the time per step separates the booster's cost from those changes. The demo model has a CTC head,
so both settings run the CTC pre-filter of the lists (``HotwordList.kept``, timed the same way: its share is
part of the lists' cost).
Two settings: the default (``official`` preset: beam 4, joint CTC decoding) and greedy LLM-only decoding
(``greedy``, ``ctc_weight 0``: the cheapest steps, so the largest share for the booster). Generated tokens
are counted too, since biasing may change the outputs' lengths, and the error rate of each list on these
utterances (official scorer, char mode: Chinese characters and English words) shows what the lists cost in
accuracy on speech that says none of them. The lists: the 240 terms of the recipe's
hotword set, then words and four-character pieces of ``extra_sentences3.tsv`` (training text).

    python benchmarks/bench_hotwords.py --test recipes/synthetic/data/test.jsonl \\
        --phrases recipes/synthetic/data/hotwords/phrases.txt --utterances 96 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from pathlib import Path

import torch

from mooer.api import MooER
from mooer.data.manifest import read_manifest
from mooer.decoding import DEFAULT_FILTERED_HOTWORD_WEIGHT, get_preset
from mooer.evaluation import evaluate
from mooer.inference.engines import LogProbRecorder
from mooer.inference.hotwords import MAX_HOTWORD_CHARS, HotwordBooster, HotwordList, read_hotwords_file

ROOT = Path(__file__).resolve().parents[1]


def phrase_pool(terms: list[str], sentences: Path, size: int) -> list[str]:
    """``size`` distinct phrases: the terms first, then words and 4-character pieces of the sentences."""
    pool = dict.fromkeys(terms)
    for line in sentences.read_text(encoding="utf-8").splitlines():
        if len(pool) >= size:
            break
        _, zh, en = line.split("\t")
        for word in re.findall(r"[A-Za-z]{7,}", en):
            pool.setdefault(word)
        cjk = "".join(re.findall(r"[\u4e00-\u9fff]", zh))
        for i in range(0, len(cjk) - 3, 4):
            pool.setdefault(cjk[i : i + 4])
    phrases = [p for p in pool if len(p) <= MAX_HOTWORD_CHARS][:size]
    if len(phrases) < size:
        raise SystemExit(f"only {len(phrases)} phrases")
    return phrases


class BoosterClock:
    """Times every call of HotwordBooster (patched on the class for the run)."""

    def __init__(self):
        self.seconds = 0.0
        self.original = HotwordBooster.__call__
        clock = self

        def timed(booster, generated, scores):
            t0 = time.perf_counter()
            try:
                return clock.original(booster, generated, scores)
            finally:
                clock.seconds += time.perf_counter() - t0

        HotwordBooster.__call__ = timed
        self.filter_seconds = 0.0
        kept = HotwordList.kept

        def timed_kept(listed, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return kept(listed, *args, **kwargs)
            finally:
                clock.filter_seconds += time.perf_counter() - t0

        HotwordList.kept = timed_kept
        self.steps = 0
        record = LogProbRecorder.__call__

        def counted(recorder, generated, scores):
            clock.steps += 1
            return record(recorder, generated, scores)

        LogProbRecorder.__call__ = counted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", type=Path, default=ROOT / "recipes/synthetic/data/test.jsonl")
    ap.add_argument("--phrases", type=Path, default=ROOT / "recipes/synthetic/data/hotwords/phrases.txt")
    ap.add_argument("--sentences", type=Path, default=ROOT / "recipes/synthetic/extra_sentences3.tsv")
    ap.add_argument("--utterances", type=int, default=96)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    utts = read_manifest(args.test).utterances
    utts = utts[:: max(1, len(utts) // args.utterances)][: args.utterances]
    paths = [str(u.audio) for u in utts]
    sizes = [int(s) for s in args.sizes.split(",")]
    pool = phrase_pool([str(p) for p in read_hotwords_file(args.phrases)], args.sentences, max(sizes))
    model = MooER.from_pretrained(None)
    clock = BoosterClock()
    settings = {"official (beam 4, joint CTC)": get_preset("official"),
                "greedy, LLM only": get_preset("greedy").replace(ctc_weight=0.0)}
    rows = []
    for name, base in settings.items():
        configs = {0: base, **{n: base.replace(hotwords=tuple(pool[:n])) for n in sizes}}
        build = {}
        for n, options in configs.items():  # warm-up; the first use of a list builds (and caches) its graph
            t0 = time.perf_counter()
            if n:
                model.pipeline.hotword_list(options.hotwords, DEFAULT_FILTERED_HOTWORD_WEIGHT)
            build[n] = time.perf_counter() - t0
            model.transcribe(paths[:2], decoding=options, batch_size=args.batch_size)
        times: dict[int, list[float]] = {n: [] for n in configs}
        booster: dict[int, float] = {n: 0.0 for n in configs}
        prefilter: dict[int, float] = {n: 0.0 for n in configs}
        steps: dict[int, int] = {}
        tokens: dict[int, int] = {}
        errors: dict[int, float] = {}
        for _ in range(args.rounds):
            for n, options in configs.items():
                clock.seconds, clock.steps, clock.filter_seconds = 0.0, 0, 0.0
                t0 = time.perf_counter()
                results = model.transcribe(paths, decoding=options, batch_size=args.batch_size)
                times[n].append(time.perf_counter() - t0)
                booster[n] += clock.seconds
                prefilter[n] += clock.filter_seconds
                steps[n] = clock.steps
                tokens[n] = sum(len(r.token_ids) for r in results)
                errors[n] = evaluate({u.id: u.text for u in utts}, {u.id: r.text for u, r in zip(utts, results)},
                                     metric="cer").score
        none, fastest = statistics.median(times[0]), min(times[0])
        for n in configs:
            med = statistics.median(times[n])
            row = {"setting": name, "phrases": n, "median_s": round(med, 2), "runs": [round(t, 2) for t in times[n]],
                   "ratio": round(med / none, 3), "ratio_fastest": round(min(times[n]) / fastest, 3),
                   "booster_share": round(booster[n] / sum(times[n]), 4),
                   "prefilter_share": round(prefilter[n] / sum(times[n]), 4), "tokens": tokens[n],
                   "steps": steps[n], "ratio_per_step": round((med / steps[n]) / (none / steps[0]), 3),
                   "graph_build_s": round(build[n], 3), "error_rate": round(errors[n], 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{len(paths)} utterances, batch {args.batch_size}, {args.rounds} rounds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}\n")
    print("| setting | phrases | median s | × none (median) | × none (fastest) | booster share of decoding | steps | "
          "× none per step | tokens written | graph build s | error rate % | CTC pre-filter share |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['phrases']} | {r['median_s']:.2f} | {r['ratio']:.3f} | {r['ratio_fastest']:.3f} | "
              f"{100 * r['booster_share']:.1f} % | {r['steps']} | {r['ratio_per_step']:.3f} | {r['tokens']} | "
              f"{r['graph_build_s']:.3f} | {r['error_rate']:.2f} | {100 * r['prefilter_share']:.1f} % |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
