"""``mooer train``: train (or fine-tune) a MooER model from a YAML config, and export it."""

from __future__ import annotations

import argparse

EXAMPLES = """
examples:
  mooer train --config conf/demo.yaml
  mooer train --config conf/demo.yaml optim.lr=3e-4 train.exp_dir=exp/lr3e-4 data.max_seconds=120
  mooer train --config conf/demo.yaml --resume                 # continue from the latest checkpoint
  mooer train --config conf/demo.yaml --export-only            # export the latest checkpoint
  torchrun --nproc_per_node 8 -m mooer.cli train --config conf/demo.yaml engine.type=ddp
  torchrun --nproc_per_node 8 -m mooer.cli train --config conf/demo.yaml engine.type=deepspeed \\
      engine.deepspeed_config=src/mooer/configs/deepspeed_zero2.json

The bundled example config with every key explained: src/mooer/configs/train_example.yaml
(python -c "import mooer.training, pathlib; print(pathlib.Path(mooer.training.__file__).parent.parent /
'configs/train_example.yaml')").
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (single process, DDP or DeepSpeed)",
                       description="Train a MooER model. Settings come from --config and key=value overrides "
                                   "(e.g. optim.lr=3e-4); relative paths in the config file are relative to it.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", metavar="FILE", help="YAML training config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=3e-4")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint of train.exp_dir (same as train.resume=auto)")
    p.add_argument("--export-only", action="store_true",
                   help="do not train: export a checkpoint (default: the latest) as export.formats")
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint to export with --export-only")
    p.add_argument("--out", metavar="DIR", help="export directory with --export-only (default: export.dir)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mooer.training.config import load_config

    overrides = list(args.overrides)
    if args.resume:
        overrides.append("train.resume=auto")
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if args.export_only:
        from mooer.training.export import export_from_checkpoint

        written = export_from_checkpoint(cfg, args.checkpoint, args.out)
        for fmt, path in written.items():
            print(f"{fmt}: {path}")
        return 0
    from mooer.training.trainer import train

    try:
        result = train(cfg)
    except BaseException:
        # No barrier: the other ranks are still training and would never reach it, so this rank would hang
        # with its error unreported. Raising ends this process; torchrun then stops the others.
        _close_process_group(barrier=False)
        raise
    _close_process_group()
    for fmt, path in result.export.items():
        if result.engine is None or result.engine.env.is_main:
            print(f"exported {fmt}: {path}")
    return 0


def _close_process_group(barrier: bool = True) -> None:
    """Tear the process group down before exit: left to interpreter shutdown, its communication threads
    can abort the process ("terminate called without an active exception") after a successful run.
    ``barrier``: wait for every rank first (after a successful run only)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
