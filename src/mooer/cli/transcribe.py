"""``mooer transcribe`` / ``mooer translate``: decode audio files to text."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, TextIO

from mooer.cli.common import add_model_arguments, load_model

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aac", ".wma", ".webm", ".mp4", ".mkv",
                    ".mov"}

EXAMPLES = """
examples:
  mooer transcribe sample.wav                          # bundled demo model, task asr
  mooer translate sample.wav                           # = --task ast (Chinese speech -> English text)
  mooer transcribe a.wav b.mp3 --task asr_ast --format jsonl
  mooer transcribe --scp wav.scp --format tsv --output hyp.tsv --batch-size 16
  mooer transcribe recordings/ --model pretrained_models --variant asr   # official release layout
  mooer transcribe demo.wav --model pretrained_models --preset greedy --beams 1 --max-new-tokens 300

formats:
  text   the text of each input, one per line (multitask output keeps its newline)
  tsv    key<TAB>text, newlines escaped as \\n
  jsonl  one JSON object per input: key, audio, task, text (+ asr, ast for asr_ast; error if it failed)
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, task, help_ in (("transcribe", None, "speech to text (asr), translation (ast) or both"),
                              ("translate", "ast", "Chinese speech to English text (= transcribe --task ast)")):
        p = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("inputs", nargs="*", metavar="AUDIO",
                       help="audio/video files or directories (searched recursively for audio files)")
        p.add_argument("--scp", metavar="FILE", help="Kaldi wav.scp: lines of 'key path'")
        add_model_arguments(p)
        g = p.add_argument_group("decoding")
        if task is None:
            g.add_argument("--task", choices=["asr", "ast", "asr_ast"],
                           help="asr = transcript, ast = English translation, asr_ast = both "
                                "(default: the model's own default)")
        g.add_argument("--preset", choices=["official", "greedy"], default="official",
                       help="official: beam 4, 200 new tokens, length penalty 0.8, EOS bias -0.2 (the official "
                            "offline settings); greedy: 1 beam, 500 new tokens (default: official)")
        g.add_argument("--beams", type=int, help="override the number of beams")
        g.add_argument("--max-new-tokens", type=int, help="override the maximum number of generated tokens")
        g.add_argument("--repetition-penalty", type=float, help="override the repetition penalty (1.0 = none)")
        g.add_argument("--no-repeat-ngram-size", type=int, help="forbid repeating n-grams of this size (0 = off)")
        g.add_argument("--batch-size", type=int, default=8, help="inputs decoded together (default: 8)")
        o = p.add_argument_group("output")
        o.add_argument("--format", "-f", choices=["text", "tsv", "jsonl"], default="text",
                       help="output format (default: text)")
        o.add_argument("--output", "-o", metavar="FILE", help="write results here instead of stdout")
        p.set_defaults(func=run, fixed_task=task)


def gather_inputs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Return (keys, paths) from positional files/directories and --scp, in the given order."""
    keys: list[str] = []
    paths: list[str] = []
    for item in args.inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not found:
                print(f"mooer: warning: no audio files in directory {path}", file=sys.stderr)
            for p in found:
                keys.append(str(p.relative_to(path).with_suffix("")).replace("/", "_"))
                paths.append(str(p))
        else:
            keys.append(path.stem)
            paths.append(str(path))
    if args.scp:
        with open(args.scp, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.strip().split(maxsplit=1)
                if not parts:
                    continue
                if len(parts) != 2:
                    print(f"mooer: warning: {args.scp}:{n}: expected 'key path', skipped", file=sys.stderr)
                    continue
                keys.append(parts[0])
                paths.append(parts[1])
    return keys, paths


def write_results(results: Iterable, fmt: str, out: TextIO) -> None:
    for r in results:
        if fmt == "jsonl":
            out.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        elif r.error is not None:
            continue  # errors go to stderr in the plain formats
        elif fmt == "tsv":
            text = r.text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", " ")
            out.write(f"{r.key}\t{text}\n")
        else:
            out.write(r.text + "\n")
        out.flush()


def run(args: argparse.Namespace) -> int:
    from mooer.decoding import get_preset

    keys, paths = gather_inputs(args)
    if not paths:
        print("mooer: error: no input; give audio files, a directory, or --scp FILE", file=sys.stderr)
        return 2
    model = load_model(args)
    task = args.fixed_task or getattr(args, "task", None)
    options = get_preset(args.preset).replace(
        num_beams=args.beams, max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size)
    results = model.transcribe(paths, task=task, batch_size=args.batch_size, decoding=options, keys=keys,
                               progress=len(paths) > 1 and sys.stderr.isatty() or len(paths) > 1)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        write_results(results, args.format, out)
    finally:
        if args.output:
            out.close()
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"mooer: error: {r.error}", file=sys.stderr)
    if failed:
        print(f"mooer: {len(failed)} of {len(results)} inputs failed", file=sys.stderr)
    return 1 if failed else 0
