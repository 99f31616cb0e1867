"""Exporting a trained model: the official release layout and mooer's own inference format.

Official layout (what the original wrote by hand after training; docs/design.md §6)::

    OUT/official/paraformer_encoder/paraformer-encoder.pth   encoder state dict, no prefix, fp32
    OUT/official/paraformer_encoder/am.mvn                   Kaldi nnet1 text (the CMVN in use)
    OUT/official/paraformer_encoder/config.yaml              the encoder architecture, FunASR's encoder_conf
    OUT/official/<variant>/adapter_project.pt                encoder_projector.* (+ encoder.model.* if trained)
    OUT/official/<variant>/lora_weights/                     adapter_config.json + adapter_model.safetensors
    OUT/official/llm/                                        the LLM the LoRA applies to (+ tokenizer)

mooer format (``OUT/mooer``): the official export loaded back *strictly* with
:func:`mooer.checkpoint.load_checkpoint` (LoRA merged in fp32), given the trained prompt table, and written
with :func:`mooer.checkpoint.save_native` — so ``mooer transcribe --model OUT/mooer`` runs exactly what the
loader would run from the official files. A CTC head trained with ``model.ctc_weight > 0`` has no place in
the official layout; the mooer format keeps it (``ctc_head.*``), for joint CTC/attention decoding.

Under ZeRO-3 every parameter is gathered first (the original saved empty partitions); the files are
written by rank 0 only (the original wrote them from every rank at once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save_file

from mooer.checkpoint import (
    ADAPTER_FILE,
    ADAPTER_PREFIX,
    CMVN_FILE,
    ENCODER_DIR,
    ENCODER_FILE,
    ENCODER_PREFIX_IN_ADAPTER,
    LORA_DIR,
    default_device_dtype,
    load_checkpoint,
    save_native,
)
from mooer.features import Cmvn
from mooer.funasr_config import CONFIG_FILE, encoder_config_to_yaml
from mooer.models.hf_compat import make_portable
from mooer.training.config import Config

if TYPE_CHECKING:  # pragma: no cover
    from mooer.training.engines import Engine

log = logging.getLogger(__name__)

LLM_DIR = "llm"


def write_cmvn(cmvn: Cmvn, path: str | Path) -> Path:
    """Write ``am.mvn`` in the Kaldi nnet1 text format that :meth:`mooer.features.Cmvn.from_file` parses.

    Values are written as the float64 repr of each float32, so the file reads back bit-exactly.
    """
    path = Path(path)
    dim = cmvn.dim

    def vec(t: torch.Tensor) -> str:
        return " ".join(repr(float(v)) for v in t.detach().cpu().to(torch.float32).numpy().astype(np.float64))

    text = (f"<Nnet> \n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim} \n<LearnRateCoef> 0 [ {vec(cmvn.shift)} ]\n"
            f"<Rescale> {dim} {dim} \n<LearnRateCoef> 0 [ {vec(cmvn.scale)} ]\n</Nnet> \n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _cpu(state: dict, dtype: torch.dtype | None = None) -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict()
    for k, v in state.items():
        v = v.detach().cpu().clone()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous()
    return out


def collect_parts(built, dtype: torch.dtype) -> dict:
    """CPU copies of everything an export needs (call inside ``engine.gathered()``)."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    model = built.model
    parts = {
        "encoder": _cpu(model.encoder.state_dict(), torch.float32),
        "encoder_config": model.encoder.config,
        "adapter": _cpu(model.adapter.state_dict(), torch.float32),
        "encoder_trained": any(p.requires_grad for p in model.encoder.parameters()),
        "ctc_head": _cpu(model.ctc_head.state_dict(), torch.float32) if model.ctc_head is not None else None,
    }
    llm = model.llm
    if isinstance(llm, PeftModel):
        parts["lora"] = _cpu(get_peft_model_state_dict(llm, save_embedding_layers=False), torch.float32)
        parts["lora_config"] = llm.peft_config["default"]
        base = llm.get_base_model()
        clean = OrderedDict()
        for k, v in base.state_dict().items():
            if "lora_" in k:
                continue
            clean[k.replace(".base_layer.", ".")] = v
        parts["llm_state"] = _cpu(clean, dtype)
        parts["llm_module"] = base
    else:
        parts["lora"] = None
        parts["llm_state"] = _cpu(llm.state_dict(), dtype)
        parts["llm_module"] = llm
    return parts


def write_official(parts: dict, built, cmvn: Cmvn, out: Path, variant: str) -> Path:
    """Write the official release layout from :func:`collect_parts` output."""
    if out.exists():
        shutil.rmtree(out)
    enc_dir = out / ENCODER_DIR
    enc_dir.mkdir(parents=True)
    torch.save(OrderedDict(parts["encoder"]), enc_dir / ENCODER_FILE)
    write_cmvn(cmvn, enc_dir / CMVN_FILE)
    # The head count is not in the weights' shapes: without this file an encoder trained with other than
    # Paraformer-large's 4 heads would load back (and into the mooer export) as a 4-head one.
    (enc_dir / CONFIG_FILE).write_text(encoder_config_to_yaml(parts["encoder_config"]), encoding="utf-8")

    task_dir = out / variant
    task_dir.mkdir(parents=True)
    adapter = OrderedDict((ADAPTER_PREFIX + k, v) for k, v in parts["adapter"].items())
    if parts["encoder_trained"]:
        adapter.update((ENCODER_PREFIX_IN_ADAPTER + k, v) for k, v in parts["encoder"].items())
    torch.save(adapter, task_dir / ADAPTER_FILE)

    if parts["lora"] is not None:
        lora_dir = task_dir / LORA_DIR
        lora_dir.mkdir()
        config = parts["lora_config"]
        was = config.inference_mode
        config.inference_mode = True
        config.save_pretrained(str(lora_dir))
        config.inference_mode = was
        save_file(dict(parts["lora"]), str(lora_dir / "adapter_model.safetensors"), metadata={"format": "pt"})

    llm_dir = out / LLM_DIR
    parts["llm_module"].save_pretrained(llm_dir, state_dict=parts["llm_state"], safe_serialization=True)
    built.tokenizer.save_pretrained(llm_dir)
    make_portable(llm_dir)  # readable by transformers 4.56 too
    return out


def export_model(engine: "Engine | None", built, cfg: Config, out_dir: str | Path | None = None,
                 formats: list[str] | None = None) -> dict:
    """Export on rank 0 (every rank must call it: ZeRO-3 gathering is collective). Returns the paths.

    ``engine`` None = a single process holding the whole model.
    """
    formats = list(formats or cfg.export.formats)
    out = Path(out_dir or cfg.export.dir or Path(cfg.train.exp_dir) / "export")
    _, dtype = default_device_dtype("cpu", cfg.export.dtype)
    is_main = engine is None or engine.env.is_main
    parts = None
    with engine.gathered() if engine is not None else contextlib.nullcontext():
        if is_main:
            parts = collect_parts(built, dtype)
    written: dict[str, str] = {}
    if is_main:
        variant = cfg.export.variant
        tmp = None
        if "official" in formats:
            official = out / "official"
        else:
            tmp = Path(tempfile.mkdtemp(prefix="mooer-export-"))
            official = tmp / "official"
        write_official(parts, built, built.cmvn, official, variant)
        if "official" in formats:
            written["official"] = str(official)
        if "mooer" in formats:
            loaded = load_checkpoint(official, variant=variant, device="cpu", dtype=dtype)
            loaded.prompts = dict(built.prompts)
            loaded.default_task = built.default_task
            if parts["ctc_head"] is not None:  # not in the official layout; kept for joint CTC decoding
                loaded.model.attach_ctc_head(parts["ctc_head"]["weight"].shape[0] - 1)
                loaded.model.ctc_head.load_state_dict(parts["ctc_head"])
            source = {k: v for k, v in built.source.items() if k != "prompts"}
            target = out / "mooer"
            if target.exists():
                shutil.rmtree(target)
            save_native(loaded, target, source={"trained": source, "exp_dir": str(cfg.train.exp_dir)})
            written["mooer"] = str(target)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("exported: %s", written)
    if engine is not None:
        engine.barrier()
    return written


def export_from_checkpoint(cfg: Config, checkpoint: str | Path | None = None,
                           out_dir: str | Path | None = None) -> dict:
    """``mooer train --export-only``: rebuild the model, load a checkpoint's trainable weights, export.

    Works for single/DDP checkpoints (``trainable.pt``) and DeepSpeed ones (ZeRO-2/3, consolidated with
    DeepSpeed's zero_to_fp32 logic), on one process.
    """
    from mooer.errors import CheckpointError, ConfigError
    from mooer.training.resume import latest_checkpoint
    from mooer.training.model import build_model

    exp_dir = Path(cfg.train.exp_dir)
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(exp_dir)
    if ckpt is None:
        raise CheckpointError(f"{exp_dir}: no checkpoint to export")
    built = build_model(cfg.model, torch.device("cpu"), torch.float32)
    cmvn_file = exp_dir / CMVN_FILE
    if cmvn_file.is_file():
        built.cmvn = Cmvn.from_file(cmvn_file)
    if built.cmvn is None:
        raise ConfigError(f"no CMVN: {cmvn_file} is missing and model.cmvn gives none")
    if (ckpt / "trainable.pt").is_file():
        from mooer.checkpoint import torch_load_weights

        state = torch_load_weights(ckpt / "trainable.pt")
    elif (ckpt / "deepspeed").is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="deepspeed")
    else:
        raise CheckpointError(f"{ckpt}: neither trainable.pt nor a deepspeed/ checkpoint")
    own = {n: p for n, p in built.model.named_parameters() if p.requires_grad}
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(f"{ckpt}: trainable parameters missing from the checkpoint: {missing[:5]}")
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(state[n])
    return export_model(None, built, cfg, out_dir)
