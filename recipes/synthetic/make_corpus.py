#!/usr/bin/env python3
"""Stage 1 of the synthetic recipe: split the sentence list and synthesise a speech corpus.

Input is ``sentences.tsv`` (``domain<TAB>zh<TAB>en``, human-translated software messages). Every pair
gives

* one **Mandarin** utterance: espeak-ng voice ``cmn-latn-pinyin`` reading pypinyin TONE3 pinyin of the
  Chinese side (transcript = the Chinese, translation = the English; usable for asr, ast and asr_ast);
* one **English** utterance: flite (voices slt, kal16, awb, rms) reading the English side (asr only).

Speaker, speed, pitch and padding vary per utterance, deterministically from ``--seed`` and the
utterance id, so a rebuild produces the same corpus bit for bit. Audio is 16 kHz mono 16-bit PCM WAV.

The split is made *by sentence*: pairs that share a Chinese or an English string (after light
normalisation) form one group, and a group is assigned to train/dev/test by a hash of its key, so the
same sentence can never be in two splits and the split does not depend on ``--limit`` or on the order of
the file.

Outputs under ``--out DIR``::

    DIR/{train,dev,test}.jsonl        one utterance per line (the project's native manifest format):
                                      {"id", "audio" (relative to DIR), "duration" (s), "text",
                                       "translation" (zh only), "lang": "zh"|"en"}
    DIR/{split}/text                  Kaldi style "id transcript" (zh and en utterances)
    DIR/{split}/text.en               "id english-translation" (zh utterances only)
    DIR/{split}/wav.scp, utt2lang     "id absolute-wav-path", "id zh|en"
    DIR/{split}_zh/, DIR/{split}_en/  the same four files for one language (score zh CER / en WER apart)
    DIR/wav/{split}/{id}.wav          the audio
    DIR/train_extra.jsonl, ...        with --extra-train FILE: one rendering of each of its pairs, training
                                      only (collect_sentences.py), with the same Kaldi-style directories;
                                      a second --extra-train FILE gives train_extra2.jsonl, and so on
    DIR/stats.json                    utterance counts, hours and generation time

Examples::

    # the full corpus (about 19k utterances), one worker, politely
    nice -n 10 python recipes/synthetic/make_corpus.py --out recipes/synthetic/data --jobs 1

    # a quick smoke test with the first 20 pairs
    python recipes/synthetic/make_corpus.py --out /tmp/syn --limit 20

    # three Mandarin and two English renderings of every training sentence
    python recipes/synthetic/make_corpus.py --out data3 --zh-per-sentence 3 --en-per-sentence 2

Re-running is cheap: existing WAVs are kept (their duration is re-measured) and only missing ones are
synthesised. Requires the Debian packages ``espeak-ng flite sox`` and the Python package ``pypinyin``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
DEFAULT_SENTENCES = HERE / "sentences.tsv"
SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: the split of the first ``--extra-train`` list: training data only, kept apart from ``train`` (own manifest
#: and WAVs); the second list's split is ``train_extra2``, and so on (see :func:`extra_split`)
EXTRA_SPLIT = "train_extra"
SAMPLE_RATE = 16000

#: espeak-ng variants mixed into the Mandarin voice ("" = the voice's own default speaker). Whispering,
#: croaking and robotic variants are left out on purpose.
ESPEAK_VARIANTS: tuple[str, ...] = (
    "", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "klatt", "klatt2", "klatt3", "Alicia", "Andrea", "Annie", "linda", "steph", "david", "john",
)
#: flite voices (kal is 8 kHz and awb_time only says the time, so they are not used).
FLITE_VOICES: tuple[str, ...] = ("slt", "kal16", "awb", "rms")

# Chinese punctuation → pause. Sentence-final marks give a longer pause than phrase marks.
_LONG_PAUSE = set("。！？；!?;")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_PINYIN_SYLLABLE = re.compile(r"^[a-zü]+[1-5]$")


# --------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Pair:
    """One line of the sentence list."""

    index: int
    domain: str
    zh: str
    en: str


def read_pairs(path: Path) -> list[Pair]:
    """Read ``domain<TAB>zh<TAB>en`` lines; blank lines are ignored, malformed ones are an error."""
    pairs: list[Pair] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3 or not fields[1].strip() or not fields[2].strip():
                raise ValueError(f"{path}:{lineno}: expected 'domain<TAB>zh<TAB>en', got {line!r}")
            domain, zh, en = (unicodedata.normalize("NFC", x.strip()) for x in fields)
            pairs.append(Pair(len(pairs), domain, zh, en))
    return pairs


def zh_key(zh: str) -> str:
    """Normalised Chinese string used for deduplication: CJK characters only."""
    return "".join(_CJK.findall(zh)) or zh


def en_key(en: str) -> str:
    """Normalised English string used for deduplication: lower-case letters, digits and single spaces."""
    return " ".join(re.sub(r"[^a-z0-9']+", " ", en.lower()).split())


def sentence_keys(zh: str, en: str) -> tuple[str, str]:
    """The two keys by which pairs are "the same sentence" (split, deduplication, the held-out guard)."""
    return "zh:" + zh_key(zh), "en:" + en_key(en)


def _stable_fraction(key: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_pairs(
    pairs: Sequence[Pair], ratios: Sequence[float] = (0.90, 0.05, 0.05), salt: str = "mooer-synthetic-v1"
) -> dict[str, list[Pair]]:
    """Assign pairs to train/dev/test, deterministically and by sentence.

    Pairs sharing a (normalised) Chinese or English string are joined into one group (union-find), and the
    whole group goes to the split selected by a hash of the group's smallest normalised Chinese string.
    The result depends only on the sentences, not on their order. Within a split the input order is kept.
    """
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"need {len(SPLITS)} non-negative ratios, got {ratios}")
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[str, int] = {}
    for i, p in enumerate(pairs):
        for key in sentence_keys(p.zh, p.en):
            j = first_seen.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)

    group_key: dict[int, str] = {}
    for i, p in enumerate(pairs):
        root = find(i)
        k = zh_key(p.zh)
        if root not in group_key or k < group_key[root]:
            group_key[root] = k

    total = float(sum(ratios))
    bounds = np.cumsum(ratios) / total
    out: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for i, p in enumerate(pairs):
        x = _stable_fraction(group_key[find(i)], salt)
        split = SPLITS[min(int(np.searchsorted(bounds, x, side="right")), len(SPLITS) - 1)]
        out[split].append(p)
    return out


def pair_id(p: Pair) -> str:
    """A stable 10-hex-digit id of a pair (its text, not its line number)."""
    return hashlib.sha1(f"{p.zh}\t{p.en}".encode("utf-8")).hexdigest()[:10]


# ------------------------------------------------------------------------------------------ pinyin
def to_pinyin(zh: str) -> str:
    """Chinese text → TONE3 pinyin for espeak-ng's ``cmn-latn-pinyin`` voice.

    Neutral tones get an explicit ``5`` (``de5``), ü is written ``v`` (which espeak-ng reads as ü), and
    Chinese punctuation becomes ``,`` (phrase pause) or ``.`` (sentence pause). Characters that pypinyin
    cannot convert are dropped.
    """
    from pypinyin import Style, lazy_pinyin

    parts: list[str] = []
    pos = 0
    for m in _CJK.finditer(zh):
        gap = zh[pos : m.start()]
        if gap.strip() and parts:
            parts.append("." if any(c in _LONG_PAUSE for c in gap) else ",")
        syllables = lazy_pinyin(m.group(), style=Style.TONE3, neutral_tone_with_five=True, errors="ignore")
        parts.extend(s for s in syllables if _PINYIN_SYLLABLE.match(s))
        pos = m.end()
    while parts and parts[-1] in ",.":
        parts.pop()
    text = ""
    for tok in parts:
        if tok in ",.":
            text = text.rstrip(",. ") + tok + " "
        else:
            text += tok + " "
    return text.strip() + "."


def extra_split(i: int) -> str:
    """The split of the ``i``-th (0-based) ``--extra-train`` list: train_extra, train_extra2, ..."""
    return EXTRA_SPLIT if i == 0 else f"{EXTRA_SPLIT}{i + 1}"


# ------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Utterance:
    """One utterance to synthesise (everything needed, so it can be sent to a worker process)."""

    id: str
    split: str
    lang: str  # "zh" | "en"
    text: str
    translation: str | None
    wav: str  # absolute path of the output WAV
    seed: int


def plan_utterances(
    splits: dict[str, list[Pair]], out: Path, seed: int, zh_per_sentence: int = 1, en_per_sentence: int = 1
) -> list[Utterance]:
    """All utterances of all splits, in a deterministic order (split, input order, zh before en).

    ``train`` gets ``zh_per_sentence``/``en_per_sentence`` renderings of each pair, every other split one.
    """
    utts: list[Utterance] = []
    seen: set[str] = set()
    for split in splits:
        n_zh = zh_per_sentence if split == "train" else 1
        n_en = en_per_sentence if split == "train" else 1
        for p in splits[split]:
            pid = pair_id(p)
            for lang, n in (("zh", n_zh), ("en", n_en)):
                for k in range(n):
                    uid = f"{lang}_{pid}_{k}"
                    if uid in seen:  # identical (zh, en) lines: synthesise once
                        continue
                    seen.add(uid)
                    utts.append(
                        Utterance(
                            id=uid,
                            split=split,
                            lang=lang,
                            text=p.zh if lang == "zh" else p.en,
                            translation=p.en if lang == "zh" else None,
                            wav=str(out / "wav" / split / f"{uid}.wav"),
                            seed=int.from_bytes(hashlib.sha256(f"{seed}:{uid}".encode()).digest()[:8], "big"),
                        )
                    )
    return utts


# -------------------------------------------------------------------------------------- synthesis
def check_tools() -> None:
    """Fail early, with an actionable message, if the TTS tools or voices are missing."""
    missing = [t for t in ("espeak-ng", "flite", "sox") if shutil.which(t) is None]
    if missing:
        raise SystemExit(
            f"missing command(s): {', '.join(missing)}. Install them with: "
            "sudo apt-get install -y espeak-ng flite sox   (or run recipes/synthetic/run.sh --stage 0)"
        )
    voices = subprocess.run(["espeak-ng", "--voices=cmn"], capture_output=True, text=True).stdout
    if "cmn-latn-pinyin" not in voices.lower():
        raise SystemExit("espeak-ng has no 'cmn-latn-pinyin' voice; install a recent espeak-ng (>= 1.50)")
    flite_voices = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
    lacking = [v for v in FLITE_VOICES if v not in flite_voices]
    if lacking:
        raise SystemExit(f"flite lacks voice(s) {lacking}; install the Debian 'flite' package")
    try:
        import pypinyin  # noqa: F401
    except ImportError as e:
        raise SystemExit("pypinyin is missing: pip install pypinyin") from e


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0:
        raise RuntimeError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr.decode(errors='replace')}")


def _trim_and_pad(audio: np.ndarray, rng: random.Random) -> np.ndarray:
    """Cut leading/trailing silence down to a random 0.1–0.3 s on each side."""
    frame = SAMPLE_RATE // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    energy = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    active = np.flatnonzero(energy > max(energy.max() * 10 ** (-40 / 20), 1e-4))
    if active.size == 0:
        return audio
    start, end = active[0] * frame, (active[-1] + 1) * frame
    lead, tail = (int(rng.uniform(0.1, 0.3) * SAMPLE_RATE) for _ in range(2))
    head = audio[max(0, start - lead) : start]
    trail = audio[end : end + tail]
    return np.concatenate(
        [np.zeros(lead - len(head), audio.dtype), head, audio[start:end], trail, np.zeros(tail - len(trail), audio.dtype)]
    )


def synthesise(utt: Utterance, tmpdir: str) -> float:
    """Write ``utt.wav`` (unless it exists) and return its duration in seconds."""
    dst = Path(utt.wav)
    if dst.exists():
        info = sf.info(str(dst))
        return info.frames / info.samplerate
    rng = random.Random(utt.seed)
    raw = os.path.join(tmpdir, f"{utt.id}.raw.wav")
    conv = os.path.join(tmpdir, f"{utt.id}.16k.wav")
    effects: list[str] = []
    if utt.lang == "zh":
        variant = rng.choice(ESPEAK_VARIANTS)
        voice = "cmn-latn-pinyin" + (f"+{variant}" if variant else "")
        speed, pitch = rng.randint(130, 190), rng.randint(30, 70)
        _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", raw, to_pinyin(utt.text)])
    else:
        voice = rng.choice(FLITE_VOICES)
        stretch = rng.uniform(0.85, 1.2)
        _run(["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}", "-t", utt.text, "-o", raw])
        effects += ["pitch", str(rng.randint(-200, 200))]
    gain = -rng.uniform(1.0, 8.0)  # peak level in dBFS
    _run(["sox", "-q", "-D", raw, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", conv,
          *effects, "gain", "-n", f"{gain:.2f}"])
    audio, sr = sf.read(conv, dtype="float32")
    if sr != SAMPLE_RATE or audio.ndim != 1:
        raise RuntimeError(f"sox produced {sr} Hz / shape {audio.shape} for {utt.id}")
    audio = _trim_and_pad(audio, rng)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    sf.write(str(part), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(part, dst)
    for f in (raw, conv):
        if os.path.exists(f):
            os.remove(f)
    return len(audio) / SAMPLE_RATE


_WORKER_TMP: str | None = None


def _worker_init() -> None:
    global _WORKER_TMP
    _WORKER_TMP = tempfile.mkdtemp(prefix="mooer-syn-")


def _worker(utt: Utterance) -> tuple[str, float]:
    assert _WORKER_TMP is not None
    return utt.id, synthesise(utt, _WORKER_TMP)


def synthesise_all(utts: Sequence[Utterance], jobs: int = 2, progress: bool = True) -> dict[str, float]:
    """Synthesise every utterance (``jobs`` processes) and return ``{id: duration}``."""
    from tqdm import tqdm

    durations: dict[str, float] = {}
    bar = tqdm(total=len(utts), unit="utt", disable=not progress, dynamic_ncols=True)
    try:
        if jobs <= 1:
            _worker_init()
            for utt in utts:
                durations[utt.id] = _worker(utt)[1]
                bar.update()
        else:
            import multiprocessing as mp

            with mp.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(jobs, _worker_init) as pool:
                for uid, dur in pool.imap_unordered(_worker, utts, chunksize=8):
                    durations[uid] = dur
                    bar.update()
    finally:
        bar.close()
        if _WORKER_TMP and os.path.isdir(_WORKER_TMP):
            shutil.rmtree(_WORKER_TMP, ignore_errors=True)
    return durations


# ------------------------------------------------------------------------------------- manifests
def _kaldi_line(uid: str, text: str) -> str:
    return f"{uid} {' '.join(text.split())}\n"


def write_kaldi_dir(kdir: Path, items: Sequence[Utterance]) -> None:
    """``text``, ``text.en`` (translations, zh utterances only), ``wav.scp`` (absolute paths), ``utt2lang``."""
    kdir.mkdir(parents=True, exist_ok=True)
    with open(kdir / "text", "w", encoding="utf-8") as tf, \
         open(kdir / "text.en", "w", encoding="utf-8") as ef, \
         open(kdir / "wav.scp", "w", encoding="utf-8") as wf, \
         open(kdir / "utt2lang", "w", encoding="utf-8") as lf:
        for u in items:
            tf.write(_kaldi_line(u.id, u.text))
            if u.translation is not None:
                ef.write(_kaldi_line(u.id, u.translation))
            wf.write(f"{u.id} {os.path.abspath(u.wav)}\n")
            lf.write(f"{u.id} {u.lang}\n")


def manifest_record(u: Utterance, out: Path, duration: float) -> dict[str, object]:
    """One manifest line: id, audio (relative to ``out``), duration, text, [translation], lang."""
    rec: dict[str, object] = {
        "id": u.id,
        "audio": Path(os.path.relpath(u.wav, out)).as_posix(),
        "duration": round(duration, 3),
        "text": u.text,
    }
    if u.translation is not None:
        rec["translation"] = u.translation
    rec["lang"] = u.lang
    return rec


def write_manifests(out: Path, utts: Iterable[Utterance], durations: dict[str, float],
                    splits: Sequence[str] = SPLITS) -> dict[str, dict]:
    """Write ``{split}.jsonl`` and the Kaldi-style ``{split}/``, ``{split}_zh/``, ``{split}_en/`` directories
    of ``splits`` (and of any other split an utterance is in).

    Returns per-split, per-language utterance counts and hours.
    """
    by_split: dict[str, list[Utterance]] = {s: [] for s in splits}
    for u in utts:
        by_split.setdefault(u.split, []).append(u)
    stats: dict[str, dict] = {}
    for split, items in by_split.items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as jf:
            for u in items:
                jf.write(json.dumps(manifest_record(u, out, durations[u.id]), ensure_ascii=False) + "\n")
        write_kaldi_dir(out / split, items)
        stats[split] = {}
        for lang in ("zh", "en"):
            subset = [u for u in items if u.lang == lang]
            write_kaldi_dir(out / f"{split}_{lang}", subset)
            stats[split][lang] = {
                "utterances": len(subset),
                "hours": round(sum(durations[u.id] for u in subset) / 3600, 3),
            }
    return stats


# ------------------------------------------------------------------------------------------- main
def build_corpus(
    out: Path,
    sentences: Path = DEFAULT_SENTENCES,
    limit: int | None = None,
    jobs: int = 2,
    seed: int = 0,
    zh_per_sentence: int = 1,
    en_per_sentence: int = 1,
    ratios: Sequence[float] = (0.90, 0.05, 0.05),
    progress: bool = True,
    extra_train: Sequence[Path] = (),
    only: Sequence[str] | None = None,
) -> dict:
    """Run the whole stage; returns the statistics also written to ``out/stats.json``.

    ``only``: build just these of train/dev/test (e.g. ``["test"]``: the held-out audio alone); the other
    splits' manifests are not written.

    ``extra_train``: lists of more pairs for training only (``collect_sentences.py``), one rendering each,
    written to ``train_extra.jsonl`` (the first list), ``train_extra2.jsonl`` (the second), ...; a pair
    sharing a sentence with dev or test is dropped (and counted).
    """
    check_tools()
    out = Path(out).resolve()
    pairs = read_pairs(Path(sentences))
    splits = full = split_pairs(pairs, ratios)  # on the full list, so --limit never changes a pair's split
    if limit is not None:
        keep = {p.index for p in pairs[:limit]}
        splits = {s: [p for p in ps if p.index in keep] for s, ps in splits.items()}
    if only is not None:
        unknown = set(only) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {SPLITS}")
        splits = {s: ps for s, ps in splits.items() if s in only}
    held_out = {k for s in SPLITS[1:] for p in full[s] for k in sentence_keys(p.zh, p.en)}
    dropped = 0
    for i, path in enumerate(extra_train):
        extra = read_pairs(Path(path))[:limit]
        kept = splits[extra_split(i)] = [p for p in extra if not held_out.intersection(sentence_keys(p.zh, p.en))]
        dropped += len(extra) - len(kept)
    utts = plan_utterances(splits, out, seed, zh_per_sentence, en_per_sentence)
    t0 = time.time()
    durations = synthesise_all(utts, jobs=jobs, progress=progress)
    elapsed = time.time() - t0
    stats = {
        "pairs": {s: len(ps) for s, ps in splits.items()},
        "splits": write_manifests(out, utts, durations, list(splits)),
        "total_hours": round(sum(durations.values()) / 3600, 3),
        "generation_seconds": round(elapsed, 1),
        "seed": seed,
        "zh_per_sentence": zh_per_sentence,
        "en_per_sentence": en_per_sentence,
    }
    if extra_train:
        stats["extra_dropped_as_held_out"] = dropped
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Examples::"):].replace("Examples::", "examples:"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True, help="output directory (created)")
    ap.add_argument("--sentences", type=Path, default=DEFAULT_SENTENCES, help="domain<TAB>zh<TAB>en list (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="only build the first N pairs of the list")
    ap.add_argument("--jobs", type=int, default=2, help="parallel worker processes (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the per-utterance voice/speed/pitch choice")
    ap.add_argument("--zh-per-sentence", type=int, default=1, help="Mandarin renderings per training sentence")
    ap.add_argument("--en-per-sentence", type=int, default=1, help="English renderings per training sentence")
    ap.add_argument("--ratios", type=float, nargs=3, default=(0.90, 0.05, 0.05), metavar=("TRAIN", "DEV", "TEST"),
                    help="split proportions (default: 0.90 0.05 0.05)")
    ap.add_argument("--extra-train", type=Path, action="append", default=None, metavar="FILE",
                    help="more domain<TAB>zh<TAB>en pairs for training only (one rendering each, train_extra.jsonl); "
                         "repeat for more lists (train_extra2.jsonl, ...)")
    ap.add_argument("--only", choices=SPLITS, action="append", default=None, metavar="SPLIT",
                    help="build only this split (repeatable; e.g. --only test for the held-out audio alone)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.zh_per_sentence < 1 or args.en_per_sentence < 1 or args.jobs < 1:
        ap.error("--jobs and --*-per-sentence must be >= 1")
    stats = build_corpus(
        args.out, args.sentences, args.limit, args.jobs, args.seed, args.zh_per_sentence, args.en_per_sentence,
        args.ratios, progress=not args.no_progress, extra_train=args.extra_train or (), only=args.only,
    )
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
