"""Hotword quality of the bundled demo model: recall, false alarms and CER/WER, over a sweep of weights.

Decodes the hotword set of ``recipes/synthetic`` (``make_hotword_set.py``: dev and test, zh and en, each
utterance speaking one listed term) and, for false alarms on speech that says none of the terms, one of
the recipe's ordinary splits, once without hotwords (the baseline) and once per weight with the whole
phrase list (``phrases.txt``, 240 terms). The dev splits choose the default weight, the test splits
report. Scores come from :func:`mooer.evaluation.evaluate`, as
``mooer eval --hotwords ... --hotword-baseline ...`` prints them: zh CER (official scorer), en WER
(normalised, as the recipe reports it).

    python benchmarks/hotword_sweep.py --hotword-set recipes/synthetic/data/hotwords --splits dev \\
        --ordinary recipes/synthetic/data/dev.jsonl --weights 2,3,4 --ordinary-weights 2,3,4 --json dev.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mooer.api import MooER
from mooer.data.manifest import read_manifest
from mooer.decoding import DEFAULT_HOTWORD_THRESHOLD, get_preset
from mooer.evaluation import evaluate
from mooer.inference.hotwords import hotword_phrases, read_hotwords_file

ROOT = Path(__file__).resolve().parents[1]


def decode(model: MooER, utts, options) -> tuple[dict[str, str], float, int]:
    """key → text, seconds, tokens generated."""
    t0 = time.perf_counter()
    results = model.transcribe([str(u.audio) for u in utts], keys=[u.id for u in utts], decoding=options,
                               task="asr")
    seconds = time.perf_counter() - t0
    bad = [r for r in results if r.error]
    if bad:
        raise SystemExit(f"{len(bad)} inputs failed, e.g. {bad[0].error}")
    return {r.key: r.text for r in results}, seconds, sum(len(r.token_ids) for r in results)


_HEARD: dict[tuple, set[str]] = {}


def heard_something(model: MooER, utts, options) -> set[str]:
    """The utterances in which the CTC pre-filter keeps at least one phrase. The others decode exactly as
    without hotwords (their booster adds nothing, and a row's ids do not depend on its batch), so only these
    need decoding; the rest take the baseline's hypotheses. (The same for every weight: kept per threshold.)"""
    key = (tuple(u.id for u in utts), options.hotwords, options.hotword_threshold)
    if key not in _HEARD:
        _HEARD[key] = _heard(model, utts, options)
    return _HEARD[key]


def ctc_posteriors(model: MooER, utts, batch_size: int = 8):
    """Per batch of ``utts``: ``(batch, CTC log-probabilities (B, T, C), lengths)``, one encoder pass each."""
    import soundfile as sf
    import torch

    from mooer.prompting import pad_features

    net = model.network
    for start in range(0, len(utts), batch_size):
        batch = utts[start : start + batch_size]
        feats, lengths = pad_features([model.featurize_waveform(sf.read(str(u.audio), dtype="float32")[0], u.id)
                                       for u in batch])
        with torch.inference_mode():
            log_probs = net.ctc_log_probs(net.encoder(feats.to(net.device, net.dtype), lengths.to(net.device)))
        yield batch, log_probs, lengths


def _heard(model: MooER, utts, options) -> set[str]:
    listed, out = model.pipeline.hotword_list(options.hotwords, options.hotword_weight or 1.0), set()
    for batch, log_probs, lengths in ctc_posteriors(model, utts):
        kept = listed.kept(log_probs, lengths, options.hotword_threshold)
        out |= {u.id for u, k in zip(batch, kept) if k}
    return out


def score(refs: dict[str, str], hyps: dict[str, str], lang: str, phrases, baseline) -> dict:
    report = evaluate(refs, hyps, metric="cer" if lang == "zh" else "wer", normalize=lang == "en",
                      hotwords=phrases, baseline=baseline)
    return {"error_rate": round(report.score, 2), **report.hotwords.summary()}


def sweep(model: MooER, name: str, utts, weights, thresholds, phrases, preset: str, save: Path | None,
          skip: bool = False, reuse: Path | None = None, langs=("zh", "en")) -> list[dict]:
    rows = []
    for lang in langs:
        subset = [u for u in utts if u.lang == lang]
        if not subset:
            continue
        refs = {u.id: u.text for u in subset}
        baseline = None
        for weight, threshold in [(0.0, None)] + [(w, t) for w in weights for t in thresholds]:
            options = get_preset(preset)
            stored = reuse / f"{name.replace(' ', '_')}_{lang}_w0.tsv" if reuse is not None else None
            if not weight and stored is not None and stored.exists():  # the baseline of an earlier --save
                with open(stored, encoding="utf-8") as f:
                    baseline = {k: h for k, _, h in (line.rstrip("\n").split("\t") for line in f)}
                if set(baseline) != set(refs):
                    raise SystemExit(f"{stored} holds other utterances than {name} {lang}")
                rows.append({"set": name, "lang": lang, "weight": 0.0, "threshold": None, "utterances": len(subset),
                             "decoded": 0, "seconds": 0.0, "tokens": 0,
                             **score(refs, baseline, lang, hotword_phrases(phrases), baseline)})
                print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
                continue
            if weight:
                options = options.replace(hotwords=phrases, hotword_weight=weight, hotword_threshold=threshold)
            prefilter = (weight and model.network.ctc_head is not None and options.hotword_threshold > float("-inf")
                         and baseline is not None and skip)
            if prefilter:  # only the utterances where the pre-filter keeps a phrase can change
                t0 = time.perf_counter()
                changed = heard_something(model, subset, options)
                hyps = dict(baseline)
                seconds, tokens = time.perf_counter() - t0, 0
                if changed:
                    part, more, tokens = decode(model, [u for u in subset if u.id in changed], options)
                    hyps.update(part)
                    seconds += more
            else:
                hyps, seconds, tokens = decode(model, subset, options)
            baseline = baseline or hyps
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                tag = f"w{weight:g}" + ("" if threshold is None else f"_t{threshold:g}")
                with open(save / f"{name.replace(' ', '_')}_{lang}_{tag}.tsv", "w", encoding="utf-8") as f:
                    f.writelines(f"{k}\t{refs[k]}\t{hyps[k]}\n" for k in refs)
            row = {"set": name, "lang": lang, "weight": weight, "threshold": threshold, "utterances": len(subset),
                   "decoded": len(changed) if prefilter else len(subset),
                   "seconds": round(seconds, 1), "tokens": tokens,
                   **score(refs, hyps, lang, hotword_phrases(phrases), baseline)}
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = ("| set | lang | weight | threshold | CER/WER % | recall % | recall of baseline misses % | false alarms "
            "(rate %, utterances) | precision % |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        missed = (f"{r['recovered_recall']:.1f} ({r['recovered']}/{r['baseline_missed']})"
                  if r["weight"] and r["baseline_missed"] else "–")
        recall = f"{r['recall']:.1f} ({r['hits']}/{r['spoken']})" if r["spoken"] else "–"
        threshold = "–" if r["threshold"] is None else f"{r['threshold']:g}"
        lines.append(f"| {r['set']} | {r['lang']} | {r['weight']:g} | {threshold} | {r['error_rate']:.2f} | {recall} | {missed} | "
                     f"{r['false_alarms']} ({r['false_alarm_rate']:.3f}, {r['utterances_with_false_alarms']}/"
                     f"{r['utterances']}) | {'–' if r['precision'] is None else format(r['precision'], '.1f')} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hotword-set", type=Path, default=ROOT / "recipes/synthetic/data/hotwords",
                    help="output of make_hotword_set.py (dev.jsonl, test.jsonl, phrases.txt)")
    ap.add_argument("--splits", default="dev,test", help="hotword-set splits to decode (default: dev,test)")
    ap.add_argument("--ordinary", type=Path, default=None,
                    help="an ordinary split of the recipe (dev.jsonl or test.jsonl): false alarms and CER/WER on "
                         "speech without the terms (default: skipped)")
    ap.add_argument("--weights", default="1,2,3,4,5,6", help="hotword weights on the hotword set")
    ap.add_argument("--ordinary-weights", default="3,4,5", help="hotword weights on the ordinary split")
    ap.add_argument("--thresholds", default=str(DEFAULT_HOTWORD_THRESHOLD),
                    help="CTC pre-filter thresholds, crossed with the weights ('-inf': no pre-filter)")
    ap.add_argument("--preset", default="official")
    ap.add_argument("--langs", default="zh,en", help="languages to decode (default: zh,en)")
    ap.add_argument("--baselines", type=Path, default=None,
                    help="a --save directory of an earlier run: take the decodings without hotwords from there")
    ap.add_argument("--skip-unfiltered", action="store_true",
                    help="with the CTC pre-filter, decode only the utterances where it keeps a phrase and give the "
                         "others the baseline's hypotheses (the same result, much faster on ordinary speech)")
    ap.add_argument("--json", type=Path, default=None, help="write every row here")
    ap.add_argument("--save", type=Path, default=None, help="write key, reference, hypothesis of every decoding here")
    args = ap.parse_args()
    model = MooER.from_pretrained(None)
    phrases = read_hotwords_file(args.hotword_set / "phrases.txt")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    rows = []
    for split in [s for s in args.splits.split(",") if s]:
        utts = read_manifest(args.hotword_set / f"{split}.jsonl").utterances
        rows += sweep(model, f"hotwords {split}", utts, [float(w) for w in args.weights.split(",")], thresholds,
                      phrases, args.preset, args.save, args.skip_unfiltered, args.baselines, args.langs.split(","))
    if args.ordinary is not None:
        utts = read_manifest(args.ordinary).utterances
        rows += sweep(model, f"ordinary {args.ordinary.stem}", utts,
                      [float(w) for w in args.ordinary_weights.split(",")], thresholds, phrases, args.preset, args.save,
                      args.skip_unfiltered, args.baselines, args.langs.split(","))
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(table(rows))


if __name__ == "__main__":
    main()
