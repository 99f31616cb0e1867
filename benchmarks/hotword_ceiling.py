"""How far hotwords can go with the bundled demo model: the oracle list and the pre-filter's trade-off.

Two measurements on the hotword set of ``recipes/synthetic`` (``make_hotword_set.py``), for one language:

1. **The oracle list.** Each utterance is decoded with a list that holds only the term it speaks and no
   pre-filter: what a perfect pre-filter would give. The recall of the terms the baseline (no hotwords)
   missed, per weight, bounds every pre-filter at that weight from above.
2. **The pre-filter's trade-off.** Per threshold of the CTC keyword score (``ctc_keyword_scores``): the
   share of the baseline's misses whose own term passes, the share that passes *and* the oracle at
   ``--weight`` recovers (what any decoding at that weight can reach with that threshold), and the share
   of ordinary utterances (which speak none of the terms) that keep some listed phrase (where boosting can
   only add false alarms).

    python benchmarks/hotword_ceiling.py --hotword-set DATA/hotwords --split test --lang en \\
        --ordinary DATA/test.jsonl --weights 4,8,12 --weight 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hotword_sweep import ctc_posteriors  # this directory: the same encoder pass as the sweep's pre-filter

from mooer.api import MooER
from mooer.data.manifest import read_manifest
from mooer.decoding import get_preset
from mooer.evaluation.hotwords import phrase_in
from mooer.inference.hotwords import hotword_phrases, read_hotwords_file

ROOT = Path(__file__).resolve().parents[1]


def transcribe(model: MooER, utts, options) -> dict[str, str]:
    results = model.transcribe([str(u.audio) for u in utts], keys=[u.id for u in utts], decoding=options, task="asr")
    return {r.key: r.text for r in results}


def keyword_scores(model: MooER, utts, hotwords) -> dict[str, list[float]]:
    """Per utterance the CTC keyword score of every listed phrase (the pre-filter's numbers)."""
    listed, out = model.pipeline.hotword_list(hotwords, 1.0), {}
    for batch, log_probs, lengths in ctc_posteriors(model, utts):
        for u, row in zip(batch, listed.scores(log_probs, lengths)):
            out[u.id] = row.tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hotword-set", type=Path, default=ROOT / "recipes/synthetic/data/hotwords")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lang", default="en")
    ap.add_argument("--ordinary", type=Path, required=True, help="an ordinary split (make_corpus.py --only test)")
    ap.add_argument("--weights", default="4,8,12", help="weights of the oracle-list decodings")
    ap.add_argument("--weight", type=float, default=8.0, help="the oracle weight the trade-off table uses")
    ap.add_argument("--thresholds", default="-2,-3,-4,-5,-6,-7,-8")
    ap.add_argument("--preset", default="official")
    args = ap.parse_args()

    model = MooER.from_pretrained(None)
    hotwords = read_hotwords_file(args.hotword_set / "phrases.txt")
    names = hotword_phrases(hotwords)
    manifest = args.hotword_set / f"{args.split}.jsonl"
    with open(manifest, encoding="utf-8") as f:
        terms = {row["id"]: row["term"] for row in map(json.loads, f)}
    utts = [u for u in read_manifest(manifest).utterances if u.lang == args.lang]
    ordinary = [u for u in read_manifest(args.ordinary).utterances if u.lang == args.lang]

    base = transcribe(model, utts, get_preset(args.preset))
    missed = [u for u in utts if not phrase_in(terms[u.id], base[u.id])]
    weights = sorted({float(w) for w in args.weights.split(",")} | {args.weight})
    print(f"{args.split} {args.lang}: {len(utts)} utterances, the baseline misses {len(missed)} terms\n")
    print("| oracle list, weight | recall of the baseline's misses |\n|---|---|")
    recovered: dict[float, set[str]] = {}
    for weight in weights:
        got = set()
        for u in missed:  # one decoding each: every utterance has its own list
            options = get_preset(args.preset).replace(hotwords=[terms[u.id]], hotword_weight=weight,
                                                      hotword_threshold=float("-inf"))
            if phrase_in(terms[u.id], transcribe(model, [u], options)[u.id]):
                got.add(u.id)
        recovered[weight] = got
        print(f"| {weight:g} | {100 * len(got) / max(1, len(missed)):.0f} % ({len(got)}/{len(missed)}) |", flush=True)

    own = keyword_scores(model, missed, hotwords)
    other = keyword_scores(model, ordinary, hotwords)
    print(f"\n| threshold | misses whose term passes | passes and the oracle at weight {args.weight:g} recovers "
          f"| ordinary utterances keeping a phrase ({len(ordinary)}) |\n|---|---|---|---|")
    for threshold in (float(t) for t in args.thresholds.split(",")):
        passing = {u.id for u in missed if own[u.id][names.index(terms[u.id])] >= threshold}
        both = passing & recovered[args.weight]
        keeping = sum(max(other[u.id]) >= threshold for u in ordinary)
        n = max(1, len(missed))
        print(f"| {threshold:g} | {100 * len(passing) / n:.0f} % ({len(passing)}) | {100 * len(both) / n:.0f} % "
              f"({len(both)}) | {100 * keeping / max(1, len(ordinary)):.1f} % ({keeping}) |", flush=True)


if __name__ == "__main__":
    main()
