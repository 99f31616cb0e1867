"""Precision/yield of pseudo-labels: the error rate of the kept labels against the fraction kept, per signal.

Input: a `mooer pseudo-label` output directory and the true transcripts of its utterances (a Kaldi ``text``
file, kept aside from the labelling). For each signal of :mod:`mooer.labelling.filter` the utterances are
ranked by that signal alone (ties keep the input order) and the labels of the best fraction are scored; the
"combined" curve is `mooer filter --yield F` itself (hard checks, then the rank-averaged score). The error rate
is the official scorer's char mode after normalisation (``mooer.evaluation.wer``): Chinese characters and
English words, pooled over the kept utterances (a CER for zh, a WER for en). "oracle" ranks by the true
error (the best any signal could do), and the pool's own rate is the flat line.

    python benchmarks/pseudo_label_curve.py LABELS --truth POOL/text --png benchmarks/pseudo_label_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mooer.evaluation.wer import ErrorCounts, TokenizerOptions, align
from mooer.labelling.filter import SIGNALS, Thresholds, apply_filter, signal_value
from mooer.labelling.jobs import read_labels
from mooer.output.formats import read_key_text

FRACTIONS = [round(0.05 * i, 2) for i in range(1, 21)]
OPTIONS = TokenizerOptions(mode="char", normalize=True)


def counts(label: str, truth: str) -> ErrorCounts:
    return align(OPTIONS.tokenize(truth), OPTIONS.tokenize(label)).counts


def rate(records: list[dict], truth: dict[str, str], lang: str | None = None) -> float:
    total = ErrorCounts()
    for r in records:
        if lang is None or r.get("lang") == lang:
            total = total + counts(r.get("text", ""), truth[r["key"]])
    return total.rate


def ranked_by(records: list[dict], key) -> list[dict]:
    scored = [(key(r), i) for i, r in enumerate(records)]
    order = sorted(range(len(records)), key=lambda i: (scored[i][0] is None, -(scored[i][0] or 0.0), i))
    return [records[i] for i in order]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels")
    p.add_argument("--truth", required=True, help="Kaldi text file: key and true transcript")
    p.add_argument("--png", default=str(Path(__file__).with_name("pseudo_label_curve.png")))
    p.add_argument("--json", help="also write the curves here")
    args = p.parse_args()
    records = list(read_labels(args.labels))
    truth = read_key_text(args.truth)
    n = len(records)
    pool = rate(records, truth)
    curves: dict[str, list[float]] = {}
    for name in SIGNALS:
        if all(signal_value(r, name) is None for r in records):
            continue
        order = ranked_by(records, lambda r, name=name: signal_value(r, name))
        curves[name] = [rate(order[: max(1, round(f * n))], truth) for f in FRACTIONS]
    curves["combined"] = [rate(apply_filter(records, keep_fraction=f).kept, truth) for f in FRACTIONS]
    oracle = ranked_by(records, lambda r: -counts(r.get("text", ""), truth[r["key"]]).rate)
    curves["oracle"] = [rate(oracle[: max(1, round(f * n))], truth) for f in FRACTIONS]

    print(f"{n} utterances; pool error rate {pool:.2f} % (zh CER {rate(records, truth, 'zh'):.2f} %, "
          f"en WER {rate(records, truth, 'en'):.2f} %)\n")
    shown = [0.1, 0.25, 0.5, 0.75, 1.0]
    print("| signal | " + " | ".join(f"{int(f * 100)} % kept" for f in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for name, values in curves.items():
        print(f"| {name} | " + " | ".join(f"{values[FRACTIONS.index(f)]:.2f}" for f in shown) + " |")
    half = apply_filter(records, keep_fraction=0.5).kept
    print(f"\ncombined at 50 % yield: {rate(half, truth):.2f} % (zh {rate(half, truth, 'zh'):.2f} %, "
          f"en {rate(half, truth, 'en'):.2f} %; {sum(r['lang'] == 'zh' for r in half)} zh + "
          f"{sum(r['lang'] == 'en' for r in half)} en kept); half the pool's rate is {pool / 2:.2f} %")
    default = apply_filter(records, Thresholds())
    print(f"default thresholds: kept {len(default.kept)} of {n} ({len(default.kept) / n:.1%}) at "
          f"{rate(default.kept, truth):.2f} % (zh {rate(default.kept, truth, 'zh'):.2f} %, "
          f"en {rate(default.kept, truth, 'en'):.2f} %); rejected by reason {default.counts()}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in curves.items():
        style = {"oracle": dict(color="grey", linestyle=":"), "combined": dict(color="black", linewidth=2.2)}
        ax.plot([100 * f for f in FRACTIONS], values, marker=".", label=name, **style.get(name, {}))
    ax.axhline(pool, color="red", linestyle="--", linewidth=1, label=f"pool ({pool:.1f} %)")
    ax.axhline(pool / 2, color="red", linestyle=":", linewidth=1, label="half the pool")
    ax.axvline(50, color="grey", linewidth=0.5)
    ax.set_xlabel("labels kept (% of the pool)")
    ax.set_ylabel("error rate of the kept labels (%)\nzh CER / en WER, pooled")
    ax.set_title(f"Pseudo-labels of the demo model on {n} unseen utterances")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"plot: {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps({"fractions": FRACTIONS, "pool": pool, "curves": curves}, indent=1))


if __name__ == "__main__":
    main()
