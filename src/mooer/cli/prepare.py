"""``mooer prepare``: build training manifests from Kaldi directories or official shards; pack into shards.

Thin layer over :mod:`mooer.data.prepare`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Turn a corpus into a native manifest (JSON lines: id, audio, duration, text, optional translation,
start/end, task, lang) for training, or pack a manifest into tar shards.

  kaldi   a Kaldi data dir: wav.scp, text, optional segments ("segid wavid start end")
  shards  the official shard list (data.list: one .tar per line); the manifest points into the tars
  pack    a manifest -> tar shards of N utterances (official layout: KEY.txt then KEY.wav) + data.list +
          a manifest pointing into them (fast sequential reads for large corpora)

Durations are measured once, from the audio headers. Bad entries (missing or unreadable audio, empty
text, ...) are skipped and counted, never fatal. The word separator "\u2581" of the official normalised
labels becomes a space. --translation adds English targets (ast, asr_ast) from a "uttid translation" file;
utterances missing from it are kept for asr.
"""

EPILOG = """\
examples:
  mooer prepare kaldi data/train --out data/train.jsonl
  mooer prepare kaldi data/train --out data/train.jsonl --translation data/train/text.en
  mooer prepare shards data/pkg/data.list --out data/train.jsonl --translation text.en
  mooer prepare pack data/train.jsonl --out data/train_shards --utts-per-shard 1000
      (then train on data/train_shards/manifest.jsonl)

exit status: 0 on success, 1 when no utterance could be prepared or an input cannot be read.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``prepare`` subcommand on ``subparsers`` (``func`` is :func:`run`)."""
    parser = subparsers.add_parser(
        "prepare",
        help="build training manifests (Kaldi dirs, official shards) and pack tar shards",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    kaldi = kinds.add_parser("kaldi", parents=[common], help="Kaldi data dir -> manifest",
                             description="Import a Kaldi data directory (wav.scp, text, optional segments).")
    kaldi.add_argument("data_dir", type=Path, metavar="DIR")
    kaldi.add_argument("--out", "-o", type=Path, required=True, metavar="MANIFEST.jsonl")
    kaldi.add_argument("--translation", type=Path, metavar="FILE", help='"uttid translation" per line')

    shards = kinds.add_parser("shards", parents=[common], help="official data.list -> manifest",
                              description="Index official tar shards into a manifest (nothing is copied).")
    shards.add_argument("list_file", type=Path, metavar="DATA.LIST")
    shards.add_argument("--out", "-o", type=Path, required=True, metavar="MANIFEST.jsonl")
    shards.add_argument("--translation", type=Path, metavar="FILE", help='"uttid translation" per line')

    pack = kinds.add_parser("pack", parents=[common], help="manifest -> tar shards + data.list + manifest",
                            description="Pack a manifest into tar shards; writes OUT/data.list and "
                                        "OUT/manifest.jsonl.")
    pack.add_argument("manifest", type=Path, metavar="MANIFEST.jsonl")
    pack.add_argument("--out", "-o", type=Path, required=True, metavar="DIR")
    pack.add_argument("--utts-per-shard", type=int, default=1000, metavar="N",
                      help="utterances per tar shard (default: 1000)")
    pack.add_argument("--prefix", default="shards", help="shard file name prefix (default: shards)")

    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``mooer prepare``; return the exit status."""
    from mooer.data.manifest import read_manifest, write_manifest
    from mooer.data.prepare import pack, prepare_kaldi, prepare_shards
    from mooer.data.shards import ShardError

    progress = not args.quiet and sys.stderr.isatty()
    try:
        if args.source == "pack":
            if args.utts_per_shard < 1:
                print("mooer prepare: error: --utts-per-shard must be at least 1", file=sys.stderr)
                return 1
            read = read_manifest(args.manifest)
            result, writer = pack(read.utterances, args.out, utts_per_shard=args.utts_per_shard,
                                  prefix=args.prefix, progress=progress)
            result.skipped.update(read.skipped)
            out = writer.manifest_path
            print(f"{len(writer.shards)} shards, list {writer.list_path}", file=sys.stderr)
        else:
            if args.source == "kaldi":
                result = prepare_kaldi(args.data_dir, translation=args.translation, progress=progress)
            else:
                result = prepare_shards(args.list_file, translation=args.translation, progress=progress)
            out = args.out
            write_manifest(out, result.utterances)
    except (OSError, ShardError, UnicodeDecodeError) as exc:
        print(f"mooer prepare: error: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: {result.summary()}", file=sys.stderr)
    return 0 if result.utterances else 1
