#!/usr/bin/env python3
"""The hotword test set of the synthetic recipe: held-out sentences that contain rare terms.

``hotword_sentences.tsv`` (``split<TAB>lang<TAB>category<TAB>term<TAB>sentence``) holds 160 short
software-message sentences, each built around one term: 80 Mandarin and 80 English, 20 of each category
(product names, technical words, people's names, place names) per language, alternately in ``dev`` (to
choose the default weight) and ``test`` (to report). Its ``unspoken`` rows are 80 more terms of the same
kinds that no sentence contains. The phrase list is all 240 terms, so every utterance's list holds its own
term and 239 terms it does not speak. No sentence is in the recipe's training lists, and every Chinese
character of the set is a single token of the demo model's tokenizer (a character outside its vocabulary
is one the model has never written, which no decoding-time biasing can fix).

The speech is synthesised exactly as stage 1 does (:mod:`make_corpus`: espeak-ng ``cmn-latn-pinyin``
voice for Mandarin, flite for English, one rendering each, seeded by the utterance id).

Outputs under ``--out DIR``::

    DIR/{dev,test}.jsonl              {"id", "audio", "duration", "text", "lang", "term", "category"}
    DIR/{split}/, DIR/{split}_zh/, DIR/{split}_en/   Kaldi style text, wav.scp, utt2lang
    DIR/phrases.txt                   the phrase list: every term, one per line
    DIR/wav/{split}/{id}.wav          the audio
    DIR/stats.json                    counts, and how often the spoken terms occur in the training lists

Example::

    python recipes/synthetic/make_hotword_set.py --out recipes/synthetic/data/hotwords
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_corpus import (  # noqa: E402
    DEFAULT_SENTENCES,
    Utterance,
    check_tools,
    en_key,
    manifest_record,
    read_pairs,
    sentence_keys,
    synthesise_all,
    write_kaldi_dir,
    zh_key,
)

DEFAULT_SET = HERE / "hotword_sentences.tsv"
TRAINING_LISTS = (DEFAULT_SENTENCES, HERE / "extra_sentences.tsv", HERE / "extra_sentences2.tsv",
                  HERE / "extra_sentences3.tsv")
SPLITS = ("dev", "test")
CATEGORIES = ("product", "technical", "person", "place")


def read_set(path: Path) -> list[dict[str, str]]:
    """The rows of the set file; malformed rows are an error naming the line."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{path}:{lineno}: expected split, lang, category, term, sentence")
        split, lang, category, term, sentence = fields
        if split not in SPLITS + ("unspoken",) or lang not in ("zh", "en") or category not in CATEGORIES:
            raise ValueError(f"{path}:{lineno}: unknown split, lang or category in {line!r}")
        if (split == "unspoken") != (not sentence) or (sentence and term not in sentence):
            raise ValueError(f"{path}:{lineno}: a spoken term's sentence must contain it; an unspoken one has none")
        rows.append({"split": split, "lang": lang, "category": category, "term": term, "sentence": sentence})
    return rows


def training_counts(rows: list[dict[str, str]], lists=TRAINING_LISTS) -> tuple[dict[str, int], list[str]]:
    """How often each term occurs in the training lists (English: whole words, any case), and the set's
    sentences found there."""
    texts, keys = [], set()
    for path in lists:
        if path.exists():
            for p in read_pairs(path):
                texts.append(p.zh + "\n" + p.en.lower())
                keys.update(sentence_keys(p.zh, p.en))
    corpus = "\n".join(texts)
    counts = {}
    for r in rows:
        term = r["term"]
        if r["lang"] == "zh":
            counts[term] = corpus.count(term)
        else:
            counts[term] = len(re.findall(rf"(?<![a-z0-9]){re.escape(term.lower())}(?![a-z0-9])", corpus))
    seen = [r["sentence"] for r in rows if r["sentence"]
            and (f"zh:{zh_key(r['sentence'])}" if r["lang"] == "zh" else f"en:{en_key(r['sentence'])}") in keys]
    return counts, seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory (created)")
    ap.add_argument("--set", type=Path, default=DEFAULT_SET, help="the set file (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="synthesis processes (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the voice/speed/pitch choice")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    check_tools()
    out = args.out.resolve()
    rows = read_set(args.set)
    counts, seen = training_counts(rows)
    if seen:
        raise SystemExit(f"{len(seen)} sentence(s) of the set are in the training lists, e.g. {seen[0]!r}")
    utts, meta = [], {}
    for r in rows:
        if r["split"] == "unspoken":
            continue
        uid = f"hw_{r['lang']}_{hashlib.sha1(r['sentence'].encode()).hexdigest()[:10]}"
        utts.append(Utterance(id=uid, split=r["split"], lang=r["lang"], text=r["sentence"], translation=None,
                              wav=str(out / "wav" / r["split"] / f"{uid}.wav"),
                              seed=int.from_bytes(hashlib.sha256(f"{args.seed}:{uid}".encode()).digest()[:8], "big")))
        meta[uid] = r
    durations = synthesise_all(utts, jobs=args.jobs, progress=not args.no_progress)
    stats: dict = {"utterances": {}, "phrases": len(rows)}
    for split in SPLITS:
        items = [u for u in utts if u.split == split]
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for u in items:
                rec = manifest_record(u, out, durations[u.id])
                rec.update(term=meta[u.id]["term"], category=meta[u.id]["category"])
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        write_kaldi_dir(out / split, items)
        for lang in ("zh", "en"):
            write_kaldi_dir(out / f"{split}_{lang}", [u for u in items if u.lang == lang])
        stats["utterances"][split] = {lang: sum(1 for u in items if u.lang == lang) for lang in ("zh", "en")}
    (out / "phrases.txt").write_text("".join(r["term"] + "\n" for r in rows), encoding="utf-8")
    spoken = [r["term"] for r in rows if r["split"] != "unspoken"]
    stats["spoken_terms_in_training_lists"] = {
        "never": sum(1 for t in spoken if counts[t] == 0),
        "1-5 times": sum(1 for t in spoken if 0 < counts[t] <= 5),
        "more": sorted((t, counts[t]) for t in spoken if counts[t] > 5),
    }
    (out / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(stats, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
