"""Building the model to train from a :class:`~mooer.training.config.ModelConfig`.

Three starting points, combinable part by part:

- ``init_from``: a whole checkpoint (official release layout or mooer format) through
  :func:`mooer.checkpoint.load_checkpoint` (strict); its LoRA, if any, is merged into the LLM, and its CTC
  head, if it has one, is continued when ``ctc_weight`` > 0, kept frozen when the encoder is frozen (the
  head still matches it, so the export decodes jointly), and dropped, with a warning, when the encoder
  trains without a CTC loss (the head would no longer match it; the export decodes LLM-only).
- components: ``encoder_path`` (a ``paraformer-encoder.pth``), ``adapter_path`` (an official
  ``adapter_project.pt``) and ``llm_path`` (a Hugging Face directory), each loaded strictly.
- from scratch: a SANM encoder of the ``encoder`` size, a new adapter (``downsample``, ``adapter_hidden``),
  and an LLM from an inline Hugging Face config (``llm_config``) with the tokenizer of ``tokenizer_path``.

Then the LoRA: new (``lora.r/alpha/dropout/target_modules``), continued *as LoRA* from a PEFT directory
(``lora.init_from``; the original merged it and trained nothing), or none (full LLM training
when ``freeze_llm`` is false). Continuing the LoRA of an official release uses its *unmerged* LLM.

Trainable parameters are kept in float32; frozen ones in ``dtype`` (bf16 on CUDA saves memory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mooer.checkpoint import (
    ADAPTER_FILE,
    CMVN_FILE,
    ENCODER_DIR,
    encoder_files,
    find_llm_dir,
    is_official_layout,
    load_adapter,
    load_checkpoint,
    load_encoder,
    load_llm,
)
from mooer.errors import CheckpointError, ConfigError
from mooer.features import Cmvn
from mooer.models.adapter import AdapterConfig, LinearAdapter
from mooer.models.mooer import MooERNetwork
from mooer.models.sanm import SANMEncoder, SANMEncoderConfig
from mooer.prompting import DEFAULT_PROMPTS
from mooer.training.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    """The model to train and everything that travels with it into an export."""

    model: MooERNetwork
    tokenizer: object
    cmvn: Cmvn | None  # None until computed from the data (``cmvn: compute``)
    prompts: dict[str, str]
    default_task: str
    lora: bool  # the LLM is a PeftModel
    source: dict = field(default_factory=dict)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameter_summary(self) -> str:
        parts = {"encoder": self.model.encoder, "adapter": self.model.adapter, "llm": self.model.llm}
        rows = []
        for name, module in parts.items():
            total = sum(p.numel() for p in module.parameters())
            train = sum(p.numel() for p in module.parameters() if p.requires_grad)
            rows.append(f"{name} {train:,}/{total:,}")
        return "trainable/total parameters: " + ", ".join(rows)


# --------------------------------------------------------------------------------------------- parts


def build_llm_from_config(llm_config: dict, tokenizer_path: str, dtype: torch.dtype):
    """A randomly initialised causal LM from an inline Hugging Face config, and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not tokenizer_path:
        raise ConfigError("model.llm_config needs model.tokenizer_path")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    fields = dict(llm_config)
    model_type = fields.pop("model_type", "qwen2")
    fields.setdefault("vocab_size", len(tokenizer))
    if fields["vocab_size"] < len(tokenizer):
        raise ConfigError(f"model.llm_config.vocab_size={fields['vocab_size']} is smaller than the tokenizer "
                          f"({len(tokenizer)} tokens)")
    fields.setdefault("pad_token_id", tokenizer.pad_token_id)
    fields.setdefault("eos_token_id", tokenizer.eos_token_id)
    fields.setdefault("bos_token_id", None)
    try:
        config = AutoConfig.for_model(model_type, **fields)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model.llm_config: {e}") from None
    llm = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return llm, tokenizer


def apply_lora(llm: nn.Module, cfg: ModelConfig) -> tuple[nn.Module, dict | None]:
    """Attach a new LoRA, or continue one from ``lora.init_from`` (trainable, never merged)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if cfg.lora.init_from:
        lora_dir = Path(cfg.lora.init_from)
        if not (lora_dir / "adapter_config.json").is_file():
            raise CheckpointError(f"{lora_dir}: not a PEFT LoRA directory (no adapter_config.json)")
        peft = PeftModel.from_pretrained(llm, str(lora_dir), is_trainable=True)
        c = peft.peft_config["default"]
        _check_lora_loaded(peft, lora_dir)
        return peft, {"lora_from": str(lora_dir), "r": c.r, "alpha": c.lora_alpha}
    if not cfg.lora.enabled:
        return llm, None
    config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                        target_modules=list(cfg.lora.target_modules), bias="none", task_type="CAUSAL_LM")
    peft = get_peft_model(llm, config)
    return peft, {"r": cfg.lora.r, "alpha": cfg.lora.alpha}


def _check_lora_loaded(peft: nn.Module, lora_dir: Path) -> None:
    """PEFT loads non-strictly; make sure every LoRA tensor of the model came from the file."""
    from peft.utils import load_peft_weights

    stored = load_peft_weights(str(lora_dir), device="cpu")
    n_model = sum(1 for n, _ in peft.named_parameters() if "lora_" in n)
    if n_model != len(stored):
        raise CheckpointError(f"{lora_dir}: {len(stored)} LoRA tensors in the file but {n_model} LoRA tensors in "
                              f"the model; the LoRA does not match this LLM")


def _is_floating(p: torch.Tensor) -> bool:
    return p.is_floating_point()


# --------------------------------------------------------------------------------------------- build


def build_model(cfg: ModelConfig, device: torch.device, frozen_dtype: torch.dtype) -> BuiltModel:
    """Build (and load) the model described by ``cfg``; set requires_grad; place it on ``device``."""
    torch.manual_seed(cfg.init_seed)
    prompts = dict(cfg.prompts) if cfg.prompts else dict(DEFAULT_PROMPTS)
    source: dict = {}
    cmvn: Cmvn | None = None
    ctc_head: nn.Linear | None = None  # a trained CTC head that the starting checkpoint carries
    init_from = Path(cfg.init_from) if cfg.init_from else None
    use_whole = init_from is not None and not (cfg.lora.init_from and is_official_layout(init_from))

    if use_whole:
        loaded = load_checkpoint(init_from, variant=cfg.variant, llm=cfg.llm_path, device="cpu", dtype=torch.float32)
        encoder, adapter, llm = loaded.model.encoder, loaded.model.adapter, loaded.model.llm
        tokenizer, cmvn = loaded.tokenizer, loaded.cmvn
        ctc_head = loaded.model.ctc_head
        if not cfg.prompts:
            prompts = dict(loaded.prompts)
        source["init_from"] = {k: v for k, v in loaded.info.items() if k in ("format", "path", "variant", "llm")}
        if cfg.adapter_path or cfg.encoder_path or cfg.llm_config:
            raise ConfigError("model.init_from loads the encoder, adapter and LLM; do not also set "
                              "model.encoder_path, model.adapter_path or model.llm_config")
    else:
        encoder_path, adapter_path, llm_path = cfg.encoder_path, cfg.adapter_path, cfg.llm_path
        cmvn_default = None
        if init_from is not None:  # official layout + continued LoRA: the unmerged parts
            from mooer.checkpoint import find_variants

            variants = find_variants(init_from)
            variant = cfg.variant or (variants[0] if len(variants) == 1 else None)
            if variant not in variants:
                raise ConfigError(f"{init_from}: choose the task directory with model.variant (found {variants})")
            encoder_path = encoder_path or str(init_from / ENCODER_DIR)
            adapter_path = adapter_path or str(init_from / variant / ADAPTER_FILE)
            llm_path = llm_path or str(find_llm_dir(init_from))
            cmvn_default = init_from / ENCODER_DIR / CMVN_FILE
            source["init_from"] = {"format": "official", "path": str(init_from), "variant": variant,
                                   "lora": "continued"}
        if encoder_path:
            enc_files = encoder_files(encoder_path)
            encoder = load_encoder(enc_files)
            cmvn_default = cmvn_default or enc_files.cmvn
            source["encoder"] = str(enc_files.weights)
        else:
            encoder = SANMEncoder(SANMEncoderConfig(**cfg.encoder))
            source["encoder"] = "scratch"
        if llm_path:
            llm, tokenizer = load_llm(Path(llm_path), torch.float32)
            if cfg.tokenizer_path:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_path)
            source["llm"] = str(llm_path)
        elif cfg.llm_config is not None:
            llm, tokenizer = build_llm_from_config(cfg.llm_config, cfg.tokenizer_path, torch.float32)
            source["llm"] = "scratch"
        else:
            raise ConfigError("the model needs an LLM: set model.init_from, model.llm_path or model.llm_config")
        llm_dim = llm.get_input_embeddings().weight.shape[1]
        if adapter_path:
            adapter = load_adapter(adapter_path, encoder)
            source["adapter"] = str(adapter_path)
        else:
            adapter = LinearAdapter(AdapterConfig(encoder_dim=encoder.config.d_model, llm_dim=llm_dim,
                                                  downsample_rate=cfg.downsample, hidden_dim=cfg.adapter_hidden))
            source["adapter"] = "new"
        if adapter.config.llm_dim != llm_dim:
            raise ConfigError(f"adapter output {adapter.config.llm_dim} != LLM hidden size {llm_dim}")
        if cmvn_default is not None and cmvn_default.is_file():
            cmvn = Cmvn.from_file(cmvn_default)

    if cfg.cmvn and cfg.cmvn != "compute":
        cmvn = Cmvn.from_file(cfg.cmvn)
    elif cfg.cmvn == "compute":
        cmvn = None  # filled by the trainer from the training data

    model = MooERNetwork(encoder, adapter, llm, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    model.requires_grad_(False)
    llm, lora_info = apply_lora(model.llm, cfg)
    model.llm = llm
    if lora_info:
        source["lora"] = lora_info
    is_peft = lora_info is not None

    # What trains: LoRA params are trainable after apply_lora; the rest follows the freeze flags.
    model.encoder.requires_grad_(not cfg.freeze_encoder)
    if cfg.encoder_dropout:
        if cfg.freeze_encoder:
            raise ConfigError("model.encoder_dropout acts on an encoder that trains: set model.freeze_encoder false")
        try:
            model.encoder.set_dropout(cfg.encoder_dropout)
        except ValueError as e:
            raise ConfigError(f"model.encoder_dropout: {e}") from None
    model.adapter.requires_grad_(not cfg.freeze_adapter)
    if not cfg.freeze_llm:
        base = model.llm.get_base_model() if is_peft else model.llm
        for name, p in base.named_parameters():
            if "lora_" not in name:
                p.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("nothing to train: every part is frozen and there is no LoRA")

    # dtypes: trainable params float32 (master weights), frozen ones in frozen_dtype.
    for p in model.parameters():
        if _is_floating(p):
            p.data = p.data.to(torch.float32 if p.requires_grad else frozen_dtype)
    model.to(device)
    if cfg.ctc_weight > 0 and cfg.freeze_encoder:
        raise ConfigError("model.ctc_weight > 0 trains the encoder: set model.freeze_encoder false")
    if ctc_head is not None and cfg.ctc_weight <= 0 and not cfg.freeze_encoder:
        log.warning("the CTC head of %s is dropped: the encoder trains without a CTC loss (model.ctc_weight "
                    "0), so the head would no longer match it; the export will decode LLM-only. Set "
                    "model.ctc_weight > 0 to keep training it, or freeze the encoder", init_from)
        ctc_head = None
    if cfg.ctc_weight > 0 or ctc_head is not None:
        torch.manual_seed(cfg.init_seed + 1)
        model.attach_ctc_head(len(tokenizer))
        if ctc_head is not None:  # continue the head of init_from (its shape was checked when it loaded)
            model.ctc_head.load_state_dict(ctc_head.state_dict())
            source["ctc_head"] = "init_from"
        if cfg.ctc_weight <= 0:  # the frozen encoder it reads stays as it is: keep it, frozen, for joint decoding
            model.ctc_head.requires_grad_(False).to(frozen_dtype)
            source["ctc_head"] = "init_from (frozen)"
    if cfg.align_weight > 0:
        if cfg.ctc_weight <= 0:
            raise ConfigError("model.align_weight > 0 aligns with the CTC head: set model.ctc_weight > 0")
        try:
            model.attach_guided_attention(*cfg.align_head)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.align_head: {e}") from None

    if cfg.gradient_checkpointing:
        base = model.llm.get_base_model() if is_peft else model.llm
        base.config.use_cache = False
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not cfg.freeze_encoder:
            model.encoder.gradient_checkpointing = True
    source["prompts"] = prompts
    return BuiltModel(model, tokenizer, cmvn, prompts, cfg.default_task, is_peft, source)


def set_train_mode(built: BuiltModel, training: bool = True) -> None:
    """Train mode for the parts that train; frozen parts stay in eval (no dropout). Explicit, where the
    original forced the encoder to eval in every forward, whether it trained or not."""
    model = built.model
    model.train(training)
    if training:
        for module in (model.encoder, model.adapter):
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
