#!/usr/bin/env python3
"""Stage 2 of the synthetic recipe: train a small Qwen2-style byte-level BPE tokenizer.

The tokenizer is built exactly like Qwen2's (NFC normaliser, Qwen2 pre-tokenisation regex followed by a
byte-level mapping, byte-level decoder, no unk token), only with a small vocabulary learned from the
training split, and with Qwen2's special tokens appended at the end in Qwen2's order::

    vocab_size - 3  <|endoftext|>   (pad)
    vocab_size - 2  <|im_start|>
    vocab_size - 1  <|im_end|>      (eos)

The output directory holds ``tokenizer.json``, ``vocab.json``, ``merges.txt`` and a
``tokenizer_config.json`` (``Qwen2Tokenizer``, the Qwen chat template), so
``transformers.AutoTokenizer.from_pretrained(DIR)`` loads it.

Training text: the ``text`` and ``translation`` fields of the given manifests (train split only!) and/or
plain text files (one sentence per line), plus the task prompts and the chat-template text, which occur
in every training example and are therefore repeated ``--prompt-weight`` times.

Examples::

    # the recipe's tokenizer, from the training manifest of stage 1 (first rendering of each sentence)
    python recipes/synthetic/make_tokenizer.py --manifest recipes/synthetic/data/train_r0.jsonl \\
        --out recipes/synthetic/data/tokenizer --vocab-size 3000

    # without audio: take the training split straight from the sentence list
    python recipes/synthetic/make_tokenizer.py --sentences recipes/synthetic/sentences.tsv --out /tmp/tok

    # from plain text, and check the result (fast vs slow vs a pure-Python reference BPE)
    python recipes/synthetic/make_tokenizer.py --text lines.txt --out /tmp/tok --vocab-size 500 --verify
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

HERE = Path(__file__).resolve().parent

#: Qwen2's pre-tokenisation regex (identical to the one in Qwen2's tokenizer.json).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
#: Qwen2's special tokens, in Qwen2's id order.
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
PAD_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"
#: The Qwen2 chat template, as in Qwen2's tokenizer_config.json.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
#: The prompt text of a MooER training example ({} = the task prompt).
PROMPT_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
TASK_PROMPTS: tuple[str, ...] = (
    "Transcribe speech to text. ",
    "Translate speech to english text. ",
    "Transcribe speech to text, then translate it to english. ",
)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPECIAL_SPLIT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


# ------------------------------------------------------------------------------------ corpus text
def manifest_texts(paths: Iterable[Path]) -> Iterator[str]:
    """``text`` and ``translation`` of every line of the JSONL manifests."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    yield rec["text"]
                    if rec.get("translation"):
                        yield rec["translation"]


def file_texts(paths: Iterable[Path]) -> Iterator[str]:
    """Non-empty lines of plain text files."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield from (line.rstrip("\r\n") for line in f if line.strip())


def sentence_list_texts(path: Path) -> Iterator[str]:
    """The zh and en sides of the *training* pairs of a sentence list (same split as make_corpus.py)."""
    sys.path.insert(0, str(HERE))
    from make_corpus import read_pairs, split_pairs

    for p in split_pairs(read_pairs(path))["train"]:
        yield p.zh
        yield p.en
        yield p.en  # once as an English transcript, once as a translation, like the manifests


def prompt_texts() -> list[str]:
    """The chat-template pieces and task prompts, with the special tokens cut out (they are added later)."""
    pieces: list[str] = []
    for prompt in TASK_PROMPTS:
        pieces.extend(p for p in _SPECIAL_SPLIT.split(PROMPT_TEMPLATE.format(prompt)) if p)
    return pieces


# ---------------------------------------------------------------------------------------- training
def qwen2_pre_tokenizer(isolate_cjk: bool = False):
    """Qwen2's pre-tokeniser; with ``isolate_cjk`` every CJK character is also cut into its own piece."""
    from tokenizers import Regex, pre_tokenizers

    steps = [pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False)]
    if isolate_cjk:
        steps.append(pre_tokenizers.Split(Regex(_CJK.pattern), behavior="isolated", invert=False))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False))
    return pre_tokenizers.Sequence(steps)


def build_tokenizer_object():
    """An untrained tokenizers.Tokenizer with Qwen2's normaliser, pre-tokeniser and decoder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = qwen2_pre_tokenizer()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def train_tokenizer(texts: Iterable[str], out: Path, vocab_size: int = 3000, min_frequency: int = 2,
                    prompt_weight: int = 100, zh_units: str = "char", zh_weight: int = 4) -> dict:
    """Train, save to ``out`` and return summary statistics. ``vocab_size`` includes the 3 special tokens.

    ``zh_units="char"`` (default) learns merges with every CJK character in its own piece, so no merge
    spans two characters: the vocabulary budget goes to making characters single tokens instead of to
    multi-character words, and a Chinese text always tokenises as the concatenation of its characters'
    tokens (with the saved, unmodified Qwen2 pre-tokeniser too, since merges never cross a character).
    ``zh_units="word"`` trains with Qwen2's pre-tokeniser unchanged (runs of characters merge freely).

    Texts containing Chinese count ``zh_weight`` times in training. This moves merges from rare English
    sub-words to Chinese characters (3000 tokens on the recipe's corpus: 575 characters are single tokens
    with weight 1, 848 with weight 4, for 1.61 → 1.70 tokens per English word).
    """
    if zh_units not in ("char", "word"):
        raise ValueError(f"zh_units must be 'char' or 'word', got {zh_units!r}")
    from tokenizers import AddedToken, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (256 bytes + specials)")
    corpus = [t for t in texts if t.strip()]
    if not corpus:
        raise ValueError("no training text")
    if zh_weight < 1 or prompt_weight < 0:
        raise ValueError("zh_weight must be >= 1 and prompt_weight >= 0")
    training = [t for t in corpus for _ in range(zh_weight if _CJK.search(t) else 1)]
    training += prompt_texts() * prompt_weight
    tok = build_tokenizer_object()
    tok.pre_tokenizer = qwen2_pre_tokenizer(isolate_cjk=zh_units == "char")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training, trainer=trainer, length=len(training))
    tok.pre_tokenizer = qwen2_pre_tokenizer()  # what is saved and used: exactly Qwen2's
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])

    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    tok.model.save(str(out))  # vocab.json + merges.txt (for loaders that build from them)
    n = tok.get_vocab_size(with_added_tokens=True)
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    assert list(ids.values()) == list(range(n - 3, n)), ids
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for t, i in ids.items()
        },
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    stats = corpus_stats(tok, corpus)
    stats["vocab_size"] = n
    stats["zh_units"] = zh_units
    stats["zh_weight"] = zh_weight
    (out / "tokenizer_stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return stats


def corpus_stats(tok, texts: Sequence[str]) -> dict:
    """Tokens per Chinese character / English word, and how many Chinese characters are single tokens."""
    zh_chars = zh_tokens = en_words = en_tokens = runs = compositional = 0
    char_freq: Counter[str] = Counter()

    def ids(x: str) -> list[int]:
        return tok.encode(x, add_special_tokens=False).ids

    for t in set(texts):
        n_tok = len(ids(t))
        cjk = _CJK.findall(t)
        for run in re.findall(f"(?:{_CJK.pattern})+", t):
            runs += 1
            compositional += ids(run) == [i for c in run for i in ids(c)]
        if cjk:
            zh_chars += len(cjk)
            zh_tokens += n_tok
            char_freq.update(cjk)
        else:
            en_words += len(t.split())
            en_tokens += n_tok
    single = {c for c in char_freq if len(tok.encode(c, add_special_tokens=False).ids) == 1}
    occ = sum(char_freq.values())
    top = [c for c, _ in char_freq.most_common()]
    return {
        "zh_tokens_per_char": round(zh_tokens / max(zh_chars, 1), 3),
        "en_tokens_per_word": round(en_tokens / max(en_words, 1), 3),
        "zh_distinct_chars": len(char_freq),
        "zh_chars_single_token": len(single),
        "zh_char_occurrences_single_token": round(sum(char_freq[c] for c in single) / max(occ, 1), 4),
        **{f"zh_top{k}_chars_single_token": round(sum(c in single for c in top[:k]) / max(len(top[:k]), 1), 4)
           for k in (500, 1000)},
        "zh_runs_tokenised_char_by_char": round(compositional / max(runs, 1), 4),
        "prompt_tokens": {p: len(tok.encode(PROMPT_TEMPLATE.format(p), add_special_tokens=False).ids) for p in TASK_PROMPTS},
    }


# ------------------------------------------------------------------------------------ verification
class ReferenceBPE:
    """A pure-Python byte-level BPE (the algorithm of the GPT-2/Qwen2 "slow" tokenizers).

    Used to check that the trained ``tokenizer.json`` means the same thing as ``vocab.json`` +
    ``merges.txt`` to a loader that does not use the ``tokenizers`` library.
    """

    def __init__(self, directory: Path) -> None:
        import regex

        self.encoder: dict[str, int] = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        lines = (directory / "merges.txt").read_text(encoding="utf-8").split("\n")
        merges = [tuple(l.split(" ")) for l in lines if l and not l.startswith("#version")]
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.pat = regex.compile(QWEN2_PRETOKENIZE_REGEX)
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_encoder = {b: chr(c) for b, c in zip(bs, cs)}
        self.bpe = lru_cache(maxsize=None)(self._bpe)

    def _bpe(self, token: str) -> tuple[str, ...]:
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        import unicodedata

        ids: list[int] = []
        for piece in self.pat.findall(unicodedata.normalize("NFC", text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids


def verify(out: Path, texts: Sequence[str]) -> dict:
    """Load ``out`` with AutoTokenizer (fast and ``use_fast=False``) and compare ids with the reference BPE."""
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    fast = AutoTokenizer.from_pretrained(str(out))
    slow = AutoTokenizer.from_pretrained(str(out), use_fast=False)
    with tempfile.TemporaryDirectory() as td:  # vocab.json + merges.txt only, no tokenizer.json
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            shutil.copy(out / name, Path(td) / name)
        from_files = AutoTokenizer.from_pretrained(td)
        ref = ReferenceBPE(out)
        n = len(fast)
        problems: list[str] = []
        if fast.eos_token != EOS_TOKEN or fast.pad_token != PAD_TOKEN or fast.bos_token is not None:
            problems.append(f"special tokens: eos={fast.eos_token} pad={fast.pad_token} bos={fast.bos_token}")
        if [fast.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] != list(range(n - 3, n)):
            problems.append("special token ids are not vocab_size-3..vocab_size-1")
        samples = list(dict.fromkeys(texts)) + [PROMPT_TEMPLATE.format(p) for p in TASK_PROMPTS]
        for t in samples:
            a = fast.encode(t, add_special_tokens=False)
            others = {
                "slow": slow.encode(t, add_special_tokens=False),
                "vocab+merges": from_files.encode(t, add_special_tokens=False),
            }
            if "<|" not in t:
                others["reference"] = ref.encode(t)
            for name, b in others.items():
                if a != b:
                    problems.append(f"{name} differs on {t!r}: {a} vs {b}")
            if fast.decode(a) != __import__("unicodedata").normalize("NFC", t):
                problems.append(f"decode does not round-trip {t!r}")
            if len(problems) > 20:
                break
    if problems:
        raise SystemExit("tokenizer verification failed:\n  " + "\n  ".join(problems[:20]))
    return {"verified_texts": len(samples), "fast_class": type(fast).__name__, "slow_class": type(slow).__name__}


# ------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Examples::"):].replace("Examples::", "examples:"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True, help="output tokenizer directory")
    ap.add_argument("--manifest", type=Path, action="append", default=[], help="JSONL manifest (repeatable)")
    ap.add_argument("--text", type=Path, action="append", default=[], help="plain text file (repeatable)")
    ap.add_argument("--sentences", type=Path, default=None, help="sentence list; its training split is used")
    ap.add_argument("--vocab-size", type=int, default=3000, help="total size incl. 3 special tokens (default: %(default)s)")
    ap.add_argument("--min-frequency", type=int, default=2, help="minimum pair frequency of a merge")
    ap.add_argument("--prompt-weight", type=int, default=100, help="repetitions of the prompt texts")
    ap.add_argument("--zh-units", choices=("char", "word"), default="char",
                    help="char: no merge spans two Chinese characters (default); word: plain Qwen2-style training")
    ap.add_argument("--zh-weight", type=int, default=4,
                    help="Chinese texts count this many times in training (default: %(default)s)")
    ap.add_argument("--verify", action="store_true", help="check fast/slow/reference agreement on the training text")
    args = ap.parse_args(argv)
    texts = list(manifest_texts(args.manifest)) + list(file_texts(args.text))
    if args.sentences:
        texts += list(sentence_list_texts(args.sentences))
    if not texts:
        ap.error("give training text with --manifest, --text or --sentences")
    stats = train_tokenizer(texts, args.out, args.vocab_size, args.min_frequency, args.prompt_weight,
                            args.zh_units, args.zh_weight)
    if args.verify:
        stats["verify"] = verify(args.out, texts)
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
