#!/usr/bin/env python3
"""An unlabelled pool for the pseudo-labelling demonstration (benchmarks/pseudo_label_curve.py).

The pool is speech the bundled demo model never heard, of sentences it never saw: pairs that pass the
filter of ``sentences.tsv`` and share no normalised Chinese or English string with ``sentences.tsv`` or any
``extra_sentences*.tsv`` (``collect_sentences.py --exclude ...``). ``pool_sentences.tsv`` holds the pairs this
script built the pool from; it was made as follows (Debian 12 bookworm, December 2026)::

    # 390 pairs: the catalogues of the .deb files in this machine's apt cache
    python recipes/synthetic/collect_sentences.py /var/cache/apt/archives/*.deb /usr/share/locale/zh_CN/LC_MESSAGES \\
        --exclude recipes/synthetic/sentences.tsv recipes/synthetic/extra_sentences*.tsv --out unused.tsv
    # 6,595 pairs: LibreOffice's catalogues (not under locale/zh_CN, so never read by the recipe)
    apt-get download libreoffice-l10n-zh-cn && dpkg-deb -x libreoffice-l10n-zh-cn_*.deb lo
    python recipes/synthetic/collect_sentences.py lo/usr/lib/libreoffice/program/resource/zh_CN/LC_MESSAGES \\
        --exclude recipes/synthetic/sentences.tsv recipes/synthetic/extra_sentences*.tsv unused.tsv --out lo.tsv
    python recipes/synthetic/make_pool.py select unused.tsv lo.tsv --pairs 800 \\
        --out recipes/synthetic/pool_sentences.tsv

(The recipe's own 16,000 unused pairs of the 1,339 Debian packages are not stored in the repository; the
packages are not on this machine.) Then::

    python recipes/synthetic/make_pool.py synth --out /tmp/pool     # ~2 min with 2 jobs

writes ``/tmp/pool/pool/{wav.scp, text, text.en, utt2lang}`` (Kaldi style; ``wav.scp`` is the input of
``mooer pseudo-label``, the texts are the truth, for measurement only) and ``/tmp/pool/wav/pool/*.wav``: one
zh utterance (espeak-ng) and one en utterance (flite) per pair, synthesised exactly like the recipe's corpus.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import (  # noqa: E402
    check_tools, en_key, plan_utterances, read_pairs, synthesise_all, write_kaldi_dir,
)

HERE = Path(__file__).resolve().parent
DEFAULT_POOL = HERE / "pool_sentences.tsv"


def select(lists: list[Path], pairs: int, out: Path) -> int:
    """The first ``pairs`` pairs of ``lists`` by a stable hash of the English, written sorted."""
    rows = {en_key(p.en): p for path in lists for p in read_pairs(path)}
    ranked = sorted(rows.values(), key=lambda p: hashlib.sha256(en_key(p.en).encode("utf-8")).digest())[:pairs]
    with open(out, "w", encoding="utf-8") as f:
        for p in sorted(ranked, key=lambda p: (p.domain, p.zh, p.en)):
            f.write(f"{p.domain}\t{p.zh}\t{p.en}\n")
    return len(ranked)


def synth(sentences: Path, out: Path, jobs: int, seed: int) -> int:
    check_tools()
    out = out.resolve()
    utts = plan_utterances({"pool": read_pairs(sentences)}, out, seed)
    synthesise_all(utts, jobs=jobs)
    write_kaldi_dir(out / "pool", utts)
    return len(utts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("select", help="choose the pool's pairs from collect_sentences.py lists")
    s.add_argument("lists", nargs="+", type=Path)
    s.add_argument("--pairs", type=int, default=800)
    s.add_argument("--out", type=Path, default=DEFAULT_POOL)
    y = sub.add_parser("synth", help="synthesise the pool")
    y.add_argument("--sentences", type=Path, default=DEFAULT_POOL)
    y.add_argument("--out", type=Path, required=True)
    y.add_argument("--jobs", type=int, default=2)
    y.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "select":
        print(f"{select(args.lists, args.pairs, args.out)} pairs -> {args.out}")
    else:
        print(f"{synth(args.sentences, args.out, args.jobs, args.seed)} utterances -> {args.out}/pool")
    return 0


if __name__ == "__main__":
    sys.exit(main())
