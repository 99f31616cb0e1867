"""Checkpoints: the official release layout and the project's own format. Loading is strict.

Official release layout::

    ROOT/paraformer_encoder/{am.mvn, paraformer-encoder.pth}   (+ config.yaml: FunASR's encoder_conf, optional)
    ROOT/<variant>/adapter_project.pt            variant in asr, ast, asr_ast_mtl, ...
    ROOT/<variant>/lora_weights/{adapter_config.json, adapter_model.bin|.safetensors}
    ROOT/<any name>/                             the LLM as a Hugging Face model directory (or --llm)

Own format (written by ``mooer convert`` and ``MooER.save_pretrained``)::

    DIR/config.json         {"mooer_format": 1, "encoder": {...}, "adapter": {...}, "prompts": {...}, ...}
    DIR/model.safetensors   encoder.*, adapter.*, cmvn.shift, cmvn.scale (+ ctc_head.* if config has "ctc_head")
    DIR/llm/                the LLM (LoRA merged) + tokenizer as a Hugging Face directory

The encoder may also come from a FunASR model directory (``model.pt`` with ``encoder.*`` keys, ``config.yaml``,
``am.mvn``): ``encoder=`` / ``--encoder``. Its architecture is read from the ``config.yaml`` beside the weights
when there is one (:mod:`mooer.funasr_config`), since the head count cannot be read from tensor shapes.

A missing or unexpected key is a :class:`CheckpointError` that names the key and the file (the original
loaded non-strictly and could silently run a random encoder).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mooer.errors import CheckpointError
from mooer.features import FEATURE_DIM, Cmvn
from mooer.funasr_config import CONFIG_FILE, encoder_config_from_yaml
from mooer.models.adapter import AdapterConfig, LinearAdapter
from mooer.models.hf_compat import make_portable
from mooer.models.mooer import MooERNetwork
from mooer.models.sanm import SANMEncoder, SANMEncoderConfig
from mooer.prompting import DEFAULT_PROMPTS, OFFICIAL_MTL_PROMPTS, OFFICIAL_PROMPTS

FORMAT_VERSION = 1
ENCODER_DIR = "paraformer_encoder"
ENCODER_FILE = "paraformer-encoder.pth"
CMVN_FILE = "am.mvn"
ADAPTER_FILE = "adapter_project.pt"
LORA_DIR = "lora_weights"
ADAPTER_PREFIX = "encoder_projector."
ENCODER_PREFIX_IN_ADAPTER = "encoder.model."
VARIANT_PREFERENCE = ("asr_ast_mtl",)
FUNASR_WEIGHTS = "model.pt"  # a FunASR model directory's weights: encoder.*, decoder.*, predictor.*, ...
FUNASR_ENCODER_PREFIX = "encoder."

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """Everything needed to run a model."""

    model: MooERNetwork
    tokenizer: object
    cmvn: Cmvn
    prompts: dict[str, str]
    default_task: str
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- helpers


def torch_load_weights(path: Path) -> dict:
    """A weights-only ``torch.load`` of a state dict; any failure is a CheckpointError naming the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as e:  # corrupt pickle, or a pickle that is not plain tensors
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch file ({e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def load_strict(module: torch.nn.Module, state: dict, source: str | Path, what: str) -> None:
    """``load_state_dict`` that names every missing/unexpected/mis-shaped key and the file."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if shapes:
        problems.append(f"shape mismatches {shapes[:5]}")
    if problems:
        raise CheckpointError(f"{source}: {what} does not match the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def default_device_dtype(device: str | None, dtype: str | torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    """CUDA + bf16 when present, else CPU + fp32."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None or dtype == "auto":
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elif isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(names)}")
        dt = names[dtype]
    return dev, dt


def load_llm(llm_dir: Path, dtype: torch.dtype, attn_implementation: str | None = None):
    """A Hugging Face causal LM and its tokenizer, loaded strictly.

    ``attn_implementation`` (``"sdpa"``, ``"eager"``, ...) picks the attention kernel; None keeps the
    transformers default (``"sdpa"`` in transformers 5).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (llm_dir / "config.json").is_file():
        raise CheckpointError(f"{llm_dir}: not a Hugging Face model directory (no config.json)")
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    llm, info = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=dtype, output_loading_info=True, **extra)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise CheckpointError(f"{llm_dir}: LLM weights do not match its config: {problems}")
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    llm.eval()
    return llm, tokenizer


# ------------------------------------------------------------------------------------------ LoRA merge


def merge_lora(llm: torch.nn.Module, lora_dir: Path) -> dict:
    """Merge a PEFT LoRA (r, alpha, targets read from adapter_config.json) into ``llm`` in place.

    PEFT maps the keys (old PEFT-0.5 style without ``.default`` included) and finds the target layers; the
    delta ``scaling · B @ A`` is computed in float32 and added to the weight, rounded once to its dtype.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    config_path = lora_dir / "adapter_config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: file not found")
    config = LoraConfig.from_pretrained(str(lora_dir))
    if getattr(config, "use_dora", False):
        raise CheckpointError(f"{config_path}: DoRA adapters are not supported")
    weights = lora_dir / "adapter_model.safetensors"
    state = load_file(weights) if weights.is_file() else torch_load_weights(lora_dir / "adapter_model.bin")
    if not weights.is_file():
        weights = lora_dir / "adapter_model.bin"
    config.inference_mode = True
    config.base_model_name_or_path = getattr(llm, "name_or_path", None)  # the release's path is stale
    peft_model = get_peft_model(llm, config)
    result = set_peft_model_state_dict(peft_model, state)
    missing = sorted(k for k in result.missing_keys if "lora_" in k)
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: LoRA weights do not match adapter_config.json: "
            f"missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    merged = 0
    with torch.no_grad():
        for module in peft_model.modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                base = module.get_base_layer()
                a = module.lora_A["default"].weight.float()
                b = module.lora_B["default"].weight.float()
                delta = (b @ a) * module.scaling["default"]
                if getattr(module, "fan_in_fan_out", False):
                    delta = delta.T
                base.weight.copy_((base.weight.float() + delta).to(base.weight.dtype))
                merged += 1
    peft_model.unload()
    if merged == 0:
        raise CheckpointError(f"{config_path}: no layer of the LLM matches target_modules {config.target_modules}")
    return {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules),
            "merged_layers": merged}


# ------------------------------------------------------------------------------------- official layout


def find_variants(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / ADAPTER_FILE).is_file())


def find_llm_dir(root: Path) -> Path:
    candidates = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / "config.json").is_file()
                  and p.name != ENCODER_DIR and not (p / ADAPTER_FILE).exists()]
    if len(candidates) != 1:
        found = [c.name for c in candidates] or "none"
        raise CheckpointError(
            f"{root}: cannot tell which directory holds the LLM (found: {found}); pass it with --llm / llm=")
    return candidates[0]


def is_official_layout(path: Path) -> bool:
    return any((path / ENCODER_DIR / name).is_file() for name in (ENCODER_FILE, FUNASR_WEIGHTS))


def is_native_format(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "mooer_format" in json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False


@dataclass(frozen=True)
class EncoderFiles:
    """Where an encoder's weights, architecture and CMVN are: all in one directory."""

    weights: Path  # paraformer-encoder.pth, or a FunASR model.pt
    config: Path | None  # the FunASR config.yaml beside the weights, if there is one
    cmvn: Path  # the am.mvn beside the weights (read, and so checked, by whoever needs it)


def encoder_files(path: str | Path) -> EncoderFiles:
    """The files of an encoder given as a weights file or a directory: a release's ``paraformer_encoder/``
    (``paraformer-encoder.pth``) or a FunASR model directory (``model.pt``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / name for name in (ENCODER_FILE, FUNASR_WEIGHTS) if (path / name).is_file()]
        if not found:
            raise CheckpointError(f"{path}: no encoder weights ({ENCODER_FILE}, or {FUNASR_WEIGHTS} of a FunASR "
                                  f"model directory)")
        path = found[0]
    elif not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    config = path.parent / CONFIG_FILE
    return EncoderFiles(weights=path, config=config if config.is_file() else None, cmvn=path.parent / CMVN_FILE)


def encoder_state(state: dict, source: Path) -> dict:
    """The encoder's own keys of a weights file: all of a bare encoder state dict (``paraformer-encoder.pth``),
    or the ``encoder.*`` keys of a FunASR model, whose decoder/predictor/CTC keys are not used (logged)."""
    # FunASR's load_pretrained_model unwraps training checkpoints the same way.
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not any(k.startswith(FUNASR_ENCODER_PREFIX) for k in state):  # a bare encoder's keys are encoders0.*, ...
        return state
    ours = {k[len(FUNASR_ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(FUNASR_ENCODER_PREFIX)}
    ignored = sorted({k.split(".")[0] for k in state if not k.startswith(FUNASR_ENCODER_PREFIX)})
    if ignored:
        log.info("%s: %d keys outside the encoder (%s) ignored", source, len(state) - len(ours), ", ".join(ignored))
    return ours


def encoder_config(state: dict, files: EncoderFiles) -> SANMEncoderConfig:
    """The architecture of ``state``: from ``config.yaml`` if there is one (checked against the shapes), else
    from the shapes plus Paraformer-large's head count and FSMN shift, which the shapes cannot show."""
    try:
        shapes = SANMEncoder.shapes_from_state_dict(state)
    except KeyError as e:
        raise CheckpointError(f"{files.weights}: not a SANM encoder state dict (no key {e})") from None
    if shapes["input_size"][0] != FEATURE_DIM:  # mooer's front end always gives 560 (80 mel bins x LFR 7)
        raise CheckpointError(f"{files.weights}: the encoder takes {shapes['input_size'][0]} features per frame "
                              f"({shapes['input_size'][1]}), mooer's front end gives {FEATURE_DIM}")
    if files.config is not None:
        return encoder_config_from_yaml(files.config, shapes)
    config = SANMEncoder.config_from_state_dict(state)
    log.info("%s: no %s beside it; assuming Paraformer-large's attention_heads=%d and sanm_shfit=%d (the shapes "
             "cannot show them)", files.weights, CONFIG_FILE, config.attention_heads, config.sanm_shift)
    if config.d_model % config.attention_heads:
        raise CheckpointError(f"{files.weights}: width {config.d_model} is not divisible by the assumed "
                              f"{config.attention_heads} heads; give the architecture in a {CONFIG_FILE} beside it")
    return config


def load_encoder(path: str | Path | EncoderFiles) -> SANMEncoder:
    """A SANM encoder, loaded strictly, from ``paraformer-encoder.pth``, a FunASR ``model.pt`` or the directory
    holding either (see :func:`encoder_files`); architecture from :func:`encoder_config`."""
    files = path if isinstance(path, EncoderFiles) else encoder_files(path)
    state = encoder_state(torch_load_weights(files.weights), files.weights)
    config = encoder_config(state, files)
    try:
        encoder = SANMEncoder(config)
    except ValueError as e:  # e.g. an FSMN shift beyond the kernel
        raise CheckpointError(f"{files.config or files.weights}: {e}") from None
    load_strict(encoder, state, files.weights, "the SANM encoder")
    return encoder


def load_adapter(path: str | Path, encoder: SANMEncoder, encoder_given: bool = False) -> LinearAdapter:
    """A LinearAdapter from an official ``adapter_project.pt`` (keys ``encoder_projector.*``), strictly.

    Its sizes and downsample rate are inferred from the shapes. A file that also holds ``encoder.model.*``
    keys (a release whose encoder was trained too) loads them into ``encoder``, strictly; that is an
    error when ``encoder_given`` (the encoder was chosen explicitly, and these weights would replace it).
    """
    path = Path(path)
    state = torch_load_weights(path)
    enc_override = {k[len(ENCODER_PREFIX_IN_ADAPTER):]: v for k, v in state.items()
                    if k.startswith(ENCODER_PREFIX_IN_ADAPTER)}
    if enc_override and encoder_given:
        raise CheckpointError(f"{path}: holds the encoder trained with this adapter ({ENCODER_PREFIX_IN_ADAPTER}*), "
                              f"which would replace the encoder given with --encoder / encoder=")
    if enc_override:
        load_strict(encoder, {**encoder.state_dict(), **enc_override}, path, "the encoder part")
    other = sorted(k for k in state if not k.startswith((ADAPTER_PREFIX, ENCODER_PREFIX_IN_ADAPTER)))
    if other:
        raise CheckpointError(f"{path}: unexpected keys {other[:10]} (adapter keys start with {ADAPTER_PREFIX!r})")
    state = {k[len(ADAPTER_PREFIX):]: v for k, v in state.items() if k.startswith(ADAPTER_PREFIX)}
    try:
        w1, w2 = state["linear1.weight"], state["linear2.weight"]
    except KeyError as e:
        raise CheckpointError(f"{path}: missing key {ADAPTER_PREFIX}{e.args[0]}") from None
    d_model = encoder.config.d_model
    if w1.shape[1] % d_model:
        raise CheckpointError(f"{path}: adapter input {w1.shape[1]} is not a multiple of encoder width {d_model}")
    config = AdapterConfig(encoder_dim=d_model, llm_dim=w2.shape[0], downsample_rate=w1.shape[1] // d_model,
                           hidden_dim=w1.shape[0])
    adapter = LinearAdapter(config)
    load_strict(adapter, state, path, "the adapter")
    return adapter


def load_official(root: Path, variant: str | None, llm_dir: Path | None, device, dtype,
                  attn_implementation: str | None = None, encoder: Path | None = None) -> Loaded:
    """The release layout; ``encoder`` (weights file or directory, see :func:`encoder_files`) replaces
    ``ROOT/paraformer_encoder``, CMVN included."""
    variants = find_variants(root)
    if variant is None:
        preferred = [v for v in VARIANT_PREFERENCE if v in variants]
        if preferred:
            variant = preferred[0]
        elif len(variants) == 1:
            variant = variants[0]
        else:
            raise CheckpointError(f"{root}: several task directories {variants}; choose one with --variant")
    elif variant not in variants:
        raise CheckpointError(f"{root}: no task directory {variant!r} with {ADAPTER_FILE} (found {variants})")
    task_dir = root / variant

    enc_files = encoder_files(encoder if encoder is not None else root / ENCODER_DIR)
    sanm = load_encoder(enc_files)
    ad_path = task_dir / ADAPTER_FILE
    adapter = load_adapter(ad_path, sanm, encoder_given=encoder is not None)
    enc_config, ad_config = sanm.config, adapter.config

    llm_dir = Path(llm_dir) if llm_dir else find_llm_dir(root)
    llm, tokenizer = load_llm(llm_dir, dtype, attn_implementation)
    if llm.get_input_embeddings().weight.shape[1] != ad_config.llm_dim:
        raise CheckpointError(f"{ad_path}: adapter output {ad_config.llm_dim} != LLM hidden size "
                              f"{llm.get_input_embeddings().weight.shape[1]} of {llm_dir}")
    lora_info = None
    if (task_dir / LORA_DIR).is_dir():
        lora_info = merge_lora(llm, task_dir / LORA_DIR)

    cmvn = Cmvn.from_file(enc_files.cmvn)
    model = MooERNetwork(sanm, adapter, llm, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    model.to(device=device, dtype=dtype).eval()
    multitask = "mtl" in variant
    prompts = dict(OFFICIAL_MTL_PROMPTS if multitask else OFFICIAL_PROMPTS)
    default_task = "ast" if multitask or variant == "ast" else "asr"
    info = {"format": "official", "path": str(root), "variant": variant, "llm": str(llm_dir), "lora": lora_info,
            "encoder": enc_config.to_dict(), "adapter": ad_config.to_dict(),
            "encoder_weights": str(enc_files.weights),
            "encoder_config": str(enc_files.config) if enc_files.config else "assumed (Paraformer-large)"}
    return Loaded(model, tokenizer, cmvn, prompts, default_task, info)


# ----------------------------------------------------------------------------------------- own format


def load_native(root: Path, device, dtype, attn_implementation: str | None = None) -> Loaded:
    config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    if config.get("mooer_format", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{root}/config.json: format {config['mooer_format']} is newer than this mooer "
                              f"understands ({FORMAT_VERSION}); upgrade mooer")
    weights = root / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights}: file not found")
    state = load_file(weights)
    encoder = SANMEncoder(SANMEncoderConfig(**config["encoder"]))
    adapter = LinearAdapter(AdapterConfig(**config["adapter"]))
    groups = {"encoder.": {}, "adapter.": {}, "cmvn.": {}}
    ctc_classes = (config.get("ctc_head") or {}).get("classes")
    if ctc_classes:  # an encoder CTC head, for joint CTC/attention decoding (mooer.inference.ctc_prefix)
        groups["ctc_head."] = {}
    for key, value in state.items():
        prefix = next((p for p in groups if key.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"{weights}: unexpected key {key!r}")
        groups[prefix][key[len(prefix):]] = value
    load_strict(encoder, groups["encoder."], weights, "the encoder")
    load_strict(adapter, groups["adapter."], weights, "the adapter")
    try:
        cmvn = Cmvn(shift=groups["cmvn."]["shift"], scale=groups["cmvn."]["scale"])
    except KeyError as e:
        raise CheckpointError(f"{weights}: missing key 'cmvn.{e.args[0]}'") from None
    llm, tokenizer = load_llm(root / "llm", dtype, attn_implementation)
    model = MooERNetwork(encoder, adapter, llm, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    if ctc_classes:
        model.attach_ctc_head(int(ctc_classes) - 1)
        load_strict(model.ctc_head, groups["ctc_head."], weights, "the CTC head")
    model.to(device=device, dtype=dtype).eval()
    prompts = dict(config.get("prompts") or DEFAULT_PROMPTS)
    info = {"format": "mooer", "path": str(root), **{k: config[k] for k in ("encoder", "adapter")},
            "source": config.get("source")}
    return Loaded(model, tokenizer, cmvn, prompts, config.get("default_task", "asr"), info)


def save_native(loaded: Loaded, out_dir: str | Path, source: dict | None = None) -> Path:
    """Write the own format; the round trip through :func:`load_native` is lossless."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state.update({f"adapter.{k}": v for k, v in model.adapter.state_dict().items()})
    if model.ctc_head is not None:
        state.update({f"ctc_head.{k}": v for k, v in model.ctc_head.state_dict().items()})
    state["cmvn.shift"] = loaded.cmvn.shift
    state["cmvn.scale"] = loaded.cmvn.scale
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    tmp = out / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    model.llm.save_pretrained(out / "llm", safe_serialization=True)
    loaded.tokenizer.save_pretrained(out / "llm")
    make_portable(out / "llm")  # readable by transformers 4.56 too
    config = {
        "mooer_format": FORMAT_VERSION,
        "encoder": model.encoder.config.to_dict(),
        "adapter": model.adapter.config.to_dict(),
        **({"ctc_head": {"classes": model.ctc_head.out_features}} if model.ctc_head is not None else {}),
        "prompts": loaded.prompts,
        "default_task": loaded.default_task,
        "source": source if source is not None else loaded.info.get("source") or {
            k: loaded.info.get(k) for k in ("format", "path", "variant", "encoder_weights", "encoder_config")
            if loaded.info.get(k)},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def load_checkpoint(path: str | Path, *, variant: str | None = None, llm: str | Path | None = None,
                    device: str | None = None, dtype: str | torch.dtype | None = None,
                    attn_implementation: str | None = None, encoder: str | Path | None = None) -> Loaded:
    """Load either layout, detected from the directory's content.

    ``encoder`` (official layout only): the encoder to use instead of ``paraformer_encoder/``, a FunASR model
    directory or any weights file or directory that :func:`encoder_files` accepts; its ``am.mvn`` comes along.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"{root}: model directory not found")
    dev, dt = default_device_dtype(device, dtype)
    encoder = Path(encoder).expanduser() if encoder else None
    # With an explicit encoder, a release directory needs no paraformer_encoder/ of its own.
    if is_official_layout(root) or (encoder is not None and find_variants(root)):
        return load_official(root, variant, Path(llm) if llm else None, dev, dt, attn_implementation, encoder)
    if is_native_format(root):
        if variant:
            raise CheckpointError(f"{root}: --variant applies to the official layout only")
        if encoder is not None:
            raise CheckpointError(f"{root}: --encoder applies to the official layout only (a mooer model "
                                  f"directory holds its encoder in model.safetensors)")
        return load_native(root, dev, dt, attn_implementation)
    raise CheckpointError(
        f"{root}: neither the official release layout ({ENCODER_DIR}/{ENCODER_FILE}) nor a mooer model "
        f"directory (config.json with 'mooer_format')")
