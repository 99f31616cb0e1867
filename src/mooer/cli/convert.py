"""``mooer convert``: official release layout → the project's own format."""

from __future__ import annotations

import argparse

from mooer.cli.common import add_model_arguments

EXAMPLES = """
examples:
  mooer convert pretrained_models my-mooer --variant asr_ast_mtl
  mooer convert pretrained_models mooer-asr-bf16 --variant asr --dtype bfloat16
  mooer transcribe audio.wav --model my-mooer
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint to the mooer format (LoRA merged, safetensors)",
                       description="Load a checkpoint (official release layout or mooer format) strictly and "
                                   "write it in the mooer format: config.json + model.safetensors + llm/.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="source model directory")
    p.add_argument("dst", help="destination directory (created)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mooer.api import MooER

    model = MooER.from_pretrained(args.src, variant=args.variant, llm=args.llm, encoder=args.encoder, device="cpu",
                                  dtype=args.dtype)
    out = model.save_pretrained(args.dst)
    print(f"wrote {out}")
    return 0
