"""``mooer pseudo-label`` and ``mooer filter``: label unlabelled audio with teachers, keep the reliable labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LABEL_EXAMPLES = """
examples:
  mooer pseudo-label --scp wav.scp --output labels/                   # the bundled model, task asr
  mooer pseudo-label pool.jsonl --output labels/ --teacher model=/models/mooer,task=asr_ast \\
      --teacher model=/models/mooer,preset=greedy,ctc_weight=0,name=greedy   # two teachers: agreement
  mooer pseudo-label shards/*.tar --output labels/ --ray                     # Ray Data on this machine
  mooer pseudo-label data.list --output /shared/labels/ --ray-address auto --actors 8 --actor-gpus 1

teachers (--teacher, repeatable; default: the bundled model): comma-separated key=value pairs
  model=DIR (default = the bundled model), task=asr|ast|asr_ast, preset=official|greedy, ctc_weight=W,
  beams=N, name=NAME; a bare DIR is model=DIR. The first teacher that writes a transcript gives the label,
  the first that writes a translation (ast, asr_ast) gives the translation.

output: OUTPUT/labels-NNNNNN.jsonl, one record per utterance: text (+ translation), and per teacher the
  mean/min token log-prob, guard verdict and reasons, compression ratio, characters (zh) or words (en) per
  second, the CTC head's greedy transcript and its CER against the LLM's (models with a CTC head), plus the
  CER between teachers. Run the same command again to resume: written blocks are skipped.
"""

FILTER_EXAMPLES = """
examples:
  mooer filter labels/ --output pseudo.jsonl                 # documented default thresholds
  mooer filter labels/ --output pseudo.jsonl --yield 0.5     # keep the best half (combined score)
  mooer filter labels/ --output pseudo.jsonl --max-ctc-cer 10 --max-teacher-cer none --no-guard

The manifest is what `mooer train` reads (data.train=pseudo.jsonl); the report (--report, default
OUTPUT.report.json) gives the counts kept and rejected and each rejected utterance's reasons.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    help_ = "label unlabelled audio with one or more teacher models, with the evidence for trusting each label"
    p = sub.add_parser("pseudo-label", help=help_, description=help_, epilog=LABEL_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="manifests (.jsonl; text not needed), directories, audio files, tar shards (.tar) or "
                        "shard lists (.list)")
    p.add_argument("--scp", metavar="FILE", help="Kaldi wav.scp: lines of 'key path'")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="output directory (JSONL shards)")
    p.add_argument("--teacher", action="append", metavar="SPEC", help="a teacher (see below); repeatable")
    p.add_argument("--block-size", type=int, default=64,
                   help="utterances per output shard, the unit of work and of resuming (default: 64)")
    p.add_argument("--batch-size", type=int, default=16, help="utterances decoded together (default: 16)")
    p.add_argument("--device", help="local run: cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch threads per model process (default: torch's)")
    r = p.add_argument_group("Ray (pip install 'mooer[ray]')")
    r.add_argument("--ray", action="store_true", help="run on Ray Data, a local Ray started in this process")
    r.add_argument("--ray-address", metavar="ADDR",
                   help="run on this Ray cluster (auto, host:6379, ray://host:10001); the output directory must "
                        "be shared by the nodes")
    r.add_argument("--actors", type=int, default=1, help="model actors (default: 1)")
    r.add_argument("--actor-gpus", type=float, default=0.0, help="GPUs per model actor (default: 0 = CPU)")
    r.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per model actor (default: 1)")
    r.add_argument("--reader-cpus", type=float, default=1.0, help="CPUs per reading/featurising task (default: 1)")
    p.set_defaults(func=run_label)

    help_ = "keep the reliable pseudo-labels and write a training manifest and a report"
    f = sub.add_parser("filter", help=help_, description=help_, epilog=FILTER_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("labels", metavar="LABELS", help="a `mooer pseudo-label` output directory")
    f.add_argument("--output", "-o", required=True, metavar="FILE", help="training manifest to write (.jsonl)")
    f.add_argument("--report", metavar="FILE", help="JSON report (default: OUTPUT.report.json)")
    f.add_argument("--yield", dest="keep_fraction", type=float, metavar="F",
                   help="target yield: keep the best fraction F of all utterances by the combined score "
                        "(after the hard checks) instead of applying the thresholds")
    from mooer.labelling.filter import Thresholds

    d = Thresholds()
    f.add_argument("--min-mean-logprob", type=_optional_float, default=d.min_mean_logprob, metavar="X",
                   help=f"reject a label whose mean token log-prob is below X (default: {d.min_mean_logprob}; none = off)")
    f.add_argument("--min-token-logprob", type=_optional_float, default=d.min_token_logprob, metavar="X",
                   help=f"reject a label with a token log-prob below X (default: {d.min_token_logprob})")
    f.add_argument("--max-ctc-cer", type=_optional_float, default=d.max_ctc_cer, metavar="P",
                   help=f"reject when the LLM and the CTC head differ by more than P %% (default: {d.max_ctc_cer})")
    f.add_argument("--max-teacher-cer", type=_optional_float, default=d.max_teacher_cer, metavar="P",
                   help=f"reject when another teacher differs from the label by more than P %% "
                        f"(default: {d.max_teacher_cer})")
    f.add_argument("--no-guard", action="store_true", help="keep labels that failed the repetition guards")
    f.add_argument("--char-rate", type=float, nargs=2, default=d.char_rate, metavar=("LO", "HI"),
                   help=f"allowed Chinese characters per second (default: {d.char_rate[0]} {d.char_rate[1]})")
    f.add_argument("--word-rate", type=float, nargs=2, default=d.word_rate, metavar=("LO", "HI"),
                   help=f"allowed English words per second (default: {d.word_rate[0]} {d.word_rate[1]})")
    f.set_defaults(func=run_filter)


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def run_label(args: argparse.Namespace) -> int:
    from mooer.labelling.inputs import read_inputs
    from mooer.labelling.jobs import run_local, run_ray
    from mooer.labelling.label import TeacherSpec

    items = read_inputs(args.inputs, args.scp)
    specs = [TeacherSpec.parse(t, i) for i, t in enumerate(args.teacher or ["default"])]
    common = dict(block_size=args.block_size, batch_size=args.batch_size, threads=args.threads)
    if args.ray or args.ray_address:
        summary = run_ray(items, args.output, specs, address=args.ray_address, actors=args.actors,
                          actor_cpus=args.actor_cpus, actor_gpus=args.actor_gpus, reader_cpus=args.reader_cpus,
                          **common)
    else:
        summary = run_local(items, args.output, specs, device=args.device, **common)
    print(f"mooer: {summary.line()}", file=sys.stderr)
    return 0


def run_filter(args: argparse.Namespace) -> int:
    from mooer.labelling.filter import Thresholds, apply_filter, write_outputs
    from mooer.labelling.jobs import read_labels

    if not Path(args.labels).is_dir():
        print(f"mooer: error: {args.labels} is not a `mooer pseudo-label` output directory", file=sys.stderr)
        return 2
    thresholds = Thresholds(min_mean_logprob=args.min_mean_logprob, min_token_logprob=args.min_token_logprob,
                            max_ctc_cer=args.max_ctc_cer, max_teacher_cer=args.max_teacher_cer,
                            guard=not args.no_guard, char_rate=tuple(args.char_rate),
                            word_rate=tuple(args.word_rate))
    try:
        result = apply_filter(read_labels(args.labels), thresholds, args.keep_fraction)
    except ValueError as e:
        print(f"mooer: error: {e}", file=sys.stderr)
        return 2
    report = args.report or f"{args.output}.report.json"
    write_outputs(result, args.output, report, thresholds, args.keep_fraction)
    total = len(result.kept) + len(result.rejected)
    reasons = ", ".join(f"{n} {reason}" for reason, n in result.counts().items()) or "none"
    print(f"mooer: kept {len(result.kept)} of {total} utterances -> {args.output}; rejected by reason: {reasons}; "
          f"report: {report}", file=sys.stderr)
    return 0
