"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model", "-m", metavar="DIR",
                   help="official release directory or mooer model directory (default: the bundled demo model)")
    g.add_argument("--variant", metavar="NAME",
                   help="task directory of an official release: asr, ast, asr_ast_mtl, ... "
                        "(default: asr_ast_mtl if present, else the only one)")
    g.add_argument("--llm", metavar="DIR", help="Hugging Face LLM directory, if not inside --model")
    g.add_argument("--encoder", metavar="DIR",
                   help="encoder to use instead of the release's paraformer_encoder/ (official layout): a FunASR "
                        "model directory (model.pt, config.yaml, am.mvn) or a directory with paraformer-encoder.pth "
                        "and am.mvn")
    g.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weights and compute dtype (default: bfloat16 on CUDA, float32 on CPU)")


def load_model(args: argparse.Namespace):
    from mooer.api import MooER

    return MooER.from_pretrained(args.model, variant=args.variant, llm=args.llm, encoder=args.encoder,
                                 device=args.device, dtype=args.dtype, engine=getattr(args, "engine", None) or "hf",
                                 engine_options=getattr(args, "engine_options", None))
