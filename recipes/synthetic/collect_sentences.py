#!/usr/bin/env python3
"""Collect more human-translated zh/en sentence pairs from Debian's gettext catalogues (training only).

``sentences.tsv`` holds the 9,548 pairs of one machine's installed message catalogues; it is split into
train/dev/test by ``make_corpus.py``. Debian ships Simplified-Chinese catalogues in about 1,300 more
packages. This script reads their ``.mo`` files (from ``.deb`` files or from unpacked directories) and
writes the pairs that pass the same filter as ``sentences.tsv``:

* single-line messages, no plural forms, no format specifiers, markup, accelerators or paths;
* English: 2-20 words of ASCII letters with simple punctuation (``. , - ( ) ' : ; ! ?``);
* Chinese: 2-40 characters, CJK ideographs and Chinese punctuation only;
* one pair per English message (the first in sorted package order).

Every pair that shares a normalised Chinese or English string with *any* pair of ``sentences.tsv`` is
dropped, so the extra pairs can only ever be training data and never leak a dev or test sentence
(``make_corpus.py --extra-train``). The output is ``domain<TAB>zh<TAB>en`` with the catalogue's name as
domain, sorted, so a rebuild from the same packages gives the same file.

Examples::

    # what built recipes/synthetic/extra_sentences.tsv (Debian 12.11 bookworm, November 2026: the 1,339
    # packages under 20 MB that ship a zh_CN catalogue, 1.4 GB of .deb files, 30 s to download)
    apt-get install -y apt-file && apt-file update
    apt-file search -x '/usr/share/locale/zh_CN/LC_MESSAGES/.*\\.mo$' | cut -d: -f1 | sort -u > pkgs.txt
    apt-cache show $(cat pkgs.txt) | awk '/^Package:/ {p = $2} /^Size:/ && !(p in s) {s[p]; if ($2 < 20e6) print p}' > small.txt
    mkdir debs && (cd debs && xargs -a ../small.txt -n 20 apt-get download)
    python recipes/synthetic/collect_sentences.py debs/*.deb --max-pairs 40000 \\
        --out recipes/synthetic/extra_sentences.tsv
    # ... and extra_sentences2.tsv: the next 40,000 by the same hash, none sharing a sentence with the first
    python recipes/synthetic/collect_sentences.py debs/*.deb --max-pairs 40000 \\
        --exclude recipes/synthetic/sentences.tsv recipes/synthetic/extra_sentences.tsv \\
        --out recipes/synthetic/extra_sentences2.tsv
    # ... and extra_sentences3.tsv: the next 40,000, none sharing a sentence with the first two
    python recipes/synthetic/collect_sentences.py debs/*.deb --max-pairs 40000 \\
        --exclude recipes/synthetic/sentences.tsv recipes/synthetic/extra_sentences.tsv \\
        recipes/synthetic/extra_sentences2.tsv --out recipes/synthetic/extra_sentences3.tsv

    # the catalogues installed on this machine
    python recipes/synthetic/collect_sentences.py /usr/share/locale/zh_CN/LC_MESSAGES --out /tmp/extra.tsv
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import en_key, read_pairs, sentence_keys, zh_key  # noqa: E402

_EN = re.compile(r"[A-Za-z][A-Za-z .,\-()':;!?]*")
_ZH = re.compile(r"[\u4e00-\u9fff。，（）：、！；？“”]{2,40}")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_MO_PATH = re.compile(r"locale/zh_CN/LC_MESSAGES/[^/]+\.mo$")


def accept(zh: str, en: str) -> bool:
    """The filter of ``sentences.tsv`` (see the module docstring)."""
    words = en.split()
    return (
        bool(_EN.fullmatch(en))
        and 2 <= len(words) <= 20
        and bool(_ZH.fullmatch(zh))
        and len(_CJK.findall(zh)) >= 2
    )


def catalogue_pairs(data: bytes) -> Iterator[tuple[str, str]]:
    """(english, chinese) of one ``.mo`` file, singular messages only, context stripped."""
    catalog = gettext.GNUTranslations(io.BytesIO(data))._catalog  # noqa: SLF001 - the parsed messages
    for msgid, msgstr in catalog.items():
        if not isinstance(msgid, str) or not msgid or not msgstr:
            continue  # plural forms are keyed by (msgid, n); "" is the header
        en = msgid.split("\x04", 1)[-1]  # drop a msgctxt
        if "\n" in en or "\n" in msgstr:
            continue
        yield unicodedata.normalize("NFC", en.strip()), unicodedata.normalize("NFC", msgstr.strip())


def read_catalogues(sources: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    """(catalogue name, .mo bytes) from .deb files, .mo files and directories (searched recursively)."""
    for src in sources:
        if src.suffix == ".deb":
            tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(src)], capture_output=True, check=True)
            with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
                for member in tf.getmembers():
                    if member.isfile() and _MO_PATH.search(member.name):
                        yield Path(member.name).stem, tf.extractfile(member).read()
        elif src.is_dir():
            for mo in sorted(src.rglob("*.mo")):
                if mo.is_symlink():  # an alias of another catalogue (as in a .deb, read once)
                    continue
                if _MO_PATH.search(mo.as_posix()) or mo.parent == src:
                    yield mo.stem, mo.read_bytes()
        else:
            yield src.stem, src.read_bytes()


def collect(
    sources: Iterable[Path], exclude: Iterable[Path] = (), max_pairs: int | None = None
) -> list[tuple[str, str, str]]:
    """The accepted pairs, sorted; with ``max_pairs``, a subset chosen by a stable hash of the English.

    ``exclude``: lists whose sentences are taken.
    """
    taken = {k for path in exclude for p in read_pairs(path) for k in sentence_keys(p.zh, p.en)}
    rows: dict[str, tuple[str, str, str]] = {}
    for name, data in sorted(read_catalogues(sources)):  # by name, then content: order-free
        try:
            pairs = list(catalogue_pairs(data))
        except (OSError, UnicodeDecodeError) as e:
            print(f"skipping catalogue {name}: {e}", file=sys.stderr)
            continue
        for en, zh in sorted(pairs):
            ek = en_key(en)
            if ek in rows or taken.intersection(sentence_keys(zh, en)) or not accept(zh, en):
                continue
            rows[ek] = (name, zh, en)
    # a Chinese string translated from two English messages belongs to one of them only
    seen_zh: set[str] = set()
    out = []
    for row in sorted(rows.values()):
        if zh_key(row[1]) not in seen_zh:
            seen_zh.add(zh_key(row[1]))
            out.append(row)
    if max_pairs is not None and len(out) > max_pairs:
        rank = sorted(out, key=lambda r: hashlib.sha256(en_key(r[2]).encode("utf-8")).digest())
        out = sorted(rank[:max_pairs])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", type=Path, help=".deb files, .mo files or directories")
    ap.add_argument("--out", type=Path, required=True, help="output TSV (domain<TAB>zh<TAB>en)")
    ap.add_argument(
        "--exclude",
        type=Path,
        nargs="+",
        default=[Path(__file__).resolve().parent / "sentences.tsv"],
        help="drop pairs sharing a sentence with these lists (default: the recipe's sentences.tsv)",
    )
    ap.add_argument("--max-pairs", type=int, default=None,
                    help="keep at most N pairs, chosen by a stable hash of the English (default: all)")
    args = ap.parse_args(argv)
    rows = collect(args.sources, args.exclude, args.max_pairs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write("\t".join(row) + "\n")
    print(f"{len(rows)} pairs from {len({r[0] for r in rows})} catalogues -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
