"""The training configuration: a tree of dataclasses loaded from YAML, with ``key.sub=value`` overrides.

Sections (each a dataclass below): ``model``, ``data``, ``optim``, ``train``, ``engine``, ``validation``,
``export``. A YAML file sets any subset of the keys; the rest keep the defaults shown here (the defaults
are the official recipe where one exists: frozen encoder, trainable adapter, LoRA r=64 alpha=16 on all
seven projections, AdamW at 1e-4 with the log warm-up of 1000 steps).

Paths
    No absolute path is ever required. A relative path written in a config file is resolved against the
    directory of that file; a relative path given as a command-line override is resolved against the
    current directory.

Overrides
    ``section.key=value`` (or ``section.key.sub=value`` inside dict-valued keys). The value is parsed as
    YAML (``1e-4``, ``true``, ``[q_proj, v_proj]``, ``{a: 1}``, ``null``) and then coerced to the type of
    the field; an unknown key is a :class:`~mooer.errors.ConfigError` that names it and lists the valid
    ones.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from mooer.errors import ConfigError

#: All seven linear projections of a Qwen2 layer (the official LoRA targets).
QWEN2_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj"]


def _path(default=None, keywords: tuple[str, ...] = ()):
    """A field holding a filesystem path (resolved against the config file's directory); ``keywords`` are
    special values that are not paths."""
    return field(default=default, metadata={"path": True, "keywords": keywords})


@dataclass
class LoraConfig:
    """LoRA on the LLM. ``init_from`` continues an existing PEFT LoRA directory *as LoRA* (the original
    merged it and trained nothing): r/alpha/targets then come from its ``adapter_config.json`` and the
    fields below are ignored."""

    enabled: bool = True
    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: list(QWEN2_PROJECTIONS))
    init_from: Optional[str] = _path()


@dataclass
class ModelConfig:
    """Where the model comes from, what is built from scratch and what is trained."""

    #: start from a whole checkpoint: an official release directory or a mooer-format directory
    #: (its LoRA, if any, is merged into the LLM; set ``lora.init_from`` to keep training it as LoRA)
    init_from: Optional[str] = _path()
    #: task directory of an official release (asr, ast, asr_ast_mtl, ...)
    variant: Optional[str] = None
    #: a Hugging Face LLM directory (weights + tokenizer), e.g. Qwen2-7B-Instruct
    llm_path: Optional[str] = _path()
    #: or an inline Hugging Face config (``model_type`` + fields) for a randomly initialised LLM
    llm_config: Optional[dict] = None
    #: tokenizer directory (default: ``llm_path``)
    tokenizer_path: Optional[str] = _path()
    #: pretrained SANM encoder: ``paraformer-encoder.pth`` or the directory holding it, or a FunASR model
    #: directory (``model.pt`` with ``encoder.*`` keys); a ``config.yaml`` beside the weights gives the head count
    encoder_path: Optional[str] = _path()
    #: SANMEncoderConfig fields for an encoder built from scratch (ignored when one is loaded)
    encoder: dict = field(default_factory=dict)
    #: dropout in the encoder while it trains (FunASR's Paraformer uses 0.1; 0 = none, like the original,
    #: whose encoder always ran in eval mode)
    encoder_dropout: float = 0.0
    #: pretrained adapter: an official ``adapter_project.pt`` (keys ``encoder_projector.*``)
    adapter_path: Optional[str] = _path()
    #: adapter frame stacking: 2, 3 or 4 = 120, 180 or 240 ms per audio token (new adapters only)
    downsample: int = 2
    #: adapter hidden width (new adapters only; the official one is 2048)
    adapter_hidden: int = 2048
    #: CMVN: an ``am.mvn`` file, or ``compute`` (global mean/variance of the training features);
    #: null = the ``am.mvn`` next to the loaded encoder / inside ``init_from``
    cmvn: Optional[str] = _path(keywords=("compute",))
    #: how many training utterances ``cmvn: compute`` reads
    cmvn_utterances: int = 500
    #: task → prompt table (default: mooer's DEFAULT_PROMPTS; asr, ast, asr_ast)
    prompts: Optional[dict] = None
    #: task used when none is given at inference
    default_task: str = "asr"
    freeze_encoder: bool = True
    freeze_adapter: bool = False
    #: freeze the LLM's own weights (LoRA weights, if any, still train)
    freeze_llm: bool = True
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: activation checkpointing in the LLM (and the encoder, if trained)
    gradient_checkpointing: bool = False
    #: weight of an auxiliary CTC loss of the encoder states against the transcript (asr, asr_ast rows);
    #: 0 = off (the official recipe). Helps an encoder trained from scratch; the mooer export keeps the head,
    #: and decoding then uses it (joint CTC/attention decoding, ``--ctc-weight``).
    ctc_weight: float = 0.0
    #: weight of a guided-attention loss (needs ctc_weight > 0): LLM head ``align_head`` = [layer, head] is
    #: pulled, when predicting a transcript token, to the audio tokens the CTC forced alignment gives it
    #: (mooer.models.alignment). Helps an LLM trained from scratch learn to read the audio; 0 = off.
    align_weight: float = 0.0
    align_head: list = field(default_factory=lambda: [1, 0])
    #: seed of the random initialisation of new parts (adapter, scratch encoder/LLM, LoRA A)
    init_seed: int = 0


@dataclass
class DataConfig:
    """Manifests, batching and the task mix (see :mod:`mooer.data`)."""

    train: Optional[str] = _path()
    dev: Optional[str] = _path()
    min_duration: float = 0.1
    max_duration: float = 30.0
    #: ``dynamic`` (duration-budget buckets) or ``fixed`` (``batch_size`` utterances)
    sampler: str = "dynamic"
    #: seconds of audio per batch per process (dynamic sampler)
    max_seconds: float = 240.0
    max_utterances: Optional[int] = None
    batch_size: int = 8
    num_buckets: int = 10
    shuffle: bool = True
    drop_last: bool = False
    #: task → sampling weight, e.g. {asr: 1.0} or {asr: 0.5, ast: 0.3, asr_ast: 0.2}
    tasks: dict = field(default_factory=lambda: {"asr": 1.0})
    #: :class:`mooer.data.augment.AugmentConfig` fields; empty = no augmentation
    augment: dict = field(default_factory=dict)
    num_workers: int = 0


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (see :mod:`mooer.training.schedule`)."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    #: ``official`` (log warm-up, linear decay), ``cosine`` (linear warm-up) or ``constant``
    schedule: str = "official"
    warmup_steps: int = 1000
    #: optimizer steps of the schedule; null = the steps this run will take (epochs × batches / accum)
    total_steps: Optional[int] = None
    #: floor of the cosine schedule as a fraction of ``lr``
    min_lr_ratio: float = 0.0
    grad_accum: int = 1
    #: max gradient norm; 0 = no clipping (the original never clips)
    clip_grad_norm: float = 0.0


@dataclass
class TrainConfig:
    """The loop: length, precision, logging, checkpoints and resume."""

    exp_dir: str = _path("exp/mooer")
    epochs: int = 1
    #: stop after this many optimizer steps (null = run all epochs)
    max_steps: Optional[int] = None
    seed: int = 42
    #: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``
    precision: str = "auto"
    device: str = "auto"
    #: CPU threads of torch (null = torch's default). On a busy machine 1 can be many times faster than
    #: oversubscribed threads; under torchrun, set it to cores / processes.
    num_threads: Optional[int] = None
    log_every: int = 10
    #: checkpoint every N optimizer steps (0 = only at the end)
    save_every: int = 1000
    keep_last: int = 3
    #: null = start fresh (refuses an exp_dir with checkpoints), ``auto`` = latest checkpoint if any,
    #: or a checkpoint directory
    resume: Optional[str] = None
    progress: bool = True
    tensorboard: bool = True


@dataclass
class EngineConfig:
    """How the processes cooperate: ``single``, ``ddp`` (torchrun) or ``deepspeed`` (ZeRO-2/3)."""

    type: str = "single"
    #: DeepSpeed JSON (zero_optimization etc.); its optimizer/scheduler sections are replaced by ours
    deepspeed_config: Optional[str] = _path()
    #: torch.distributed backend: auto = nccl on CUDA, gloo on CPU
    backend: str = "auto"
    find_unused_parameters: bool = False


@dataclass
class ValidationConfig:
    """Dev-set evaluation during training (the original had none)."""

    #: every N optimizer steps (0 = never; the end of training always validates when a dev set is set)
    every: int = 0
    #: at most this many dev batches for loss / token accuracy (null = all)
    max_batches: Optional[int] = None
    #: greedy-decode this many dev utterances and score them (CER zh, WER en, BLEU ast); 0 = off
    decode_utterances: int = 16
    decode_batch_size: int = 8
    max_new_tokens: int = 200
    #: decoding preset of mooer.decoding (``greedy`` or ``official``)
    decoding: str = "greedy"


@dataclass
class ExportConfig:
    """What to write at the end of training (also ``mooer train --export-only``)."""

    at_end: bool = True
    #: ``mooer`` (own inference format, LoRA merged) and/or ``official`` (release layout)
    formats: list = field(default_factory=lambda: ["mooer"])
    #: output directory; null = ``<exp_dir>/export``; formats go to ``<dir>/<format>``
    dir: Optional[str] = _path()
    #: task directory name of the official layout
    variant: str = "asr"
    #: dtype of the exported weights
    dtype: str = "float32"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------- loading


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a YAML-parsed value to a field type; raise ConfigError naming the key otherwise."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: null is not allowed (expected {getattr(base, '__name__', base)})")
    origin = typing.get_origin(base) or base
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                pass
            else:
                if f.is_integer():
                    return int(f)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _resolve_path(value: Optional[str], base_dir: Path, keywords: tuple[str, ...] = ()) -> Optional[str]:
    if value is None or value == "" or value in keywords or value in ("auto",):
        return value
    p = Path(os.path.expanduser(str(value)))
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _build(cls, data: dict, where: str, base_dir: Path):
    """Instantiate dataclass ``cls`` from a mapping, strictly."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!r}; valid keys of "
                          f"{where or 'the config'}: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key, base_dir)
            continue
        value = _coerce(value, tp, key)
        if known[name].metadata.get("path"):
            value = _resolve_path(value, base_dir, known[name].metadata.get("keywords", ()))
        kwargs[name] = value
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_override(config: Config, assignment: str, base_dir: Path | None = None) -> None:
    """Apply one ``a.b.c=value`` override in place (paths relative to ``base_dir``, default cwd)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value (e.g. optim.lr=3e-4)")
    key, _, raw = assignment.partition("=")
    key = key.strip()
    parts = key.split(".")
    base_dir = base_dir or Path.cwd()
    obj: Any = config
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(obj):
            names = [f.name for f in dataclasses.fields(obj)]
            if part not in names:
                parent = ".".join(parts[:i]) or "the config"
                raise ConfigError(f"unknown config key {where!r}; valid keys of {parent}: {sorted(names)}")
            f = next(f for f in dataclasses.fields(obj) if f.name == part)
            tp = _hints(type(obj))[part]
            if last:
                value = _parse_value(raw)
                if dataclasses.is_dataclass(tp):
                    new = _build(tp, value, where, base_dir)
                else:
                    new = _coerce(value, tp, where)
                    if f.metadata.get("path"):
                        new = _resolve_path(new, base_dir, f.metadata.get("keywords", ()))
                setattr(obj, part, new)
                return
            child = getattr(obj, part)
            if child is None and _unwrap_optional(tp)[0] is dict:
                child = {}
                setattr(obj, part, child)
            obj = child
        elif isinstance(obj, dict):
            if last:
                obj[part] = _parse_value(raw)
                return
            obj = obj.setdefault(part, {})
            if not isinstance(obj, dict):
                raise ConfigError(f"{where}: is not a mapping, cannot set {key!r}")
        else:
            raise ConfigError(f"{'.'.join(parts[:i])}: is not a section, cannot set {key!r}")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from the defaults) and apply ``key=value`` overrides."""
    if path is None:
        config = Config()
    else:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        try:
            config = _build(Config, data, "", path.resolve().parent)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for item in overrides:
        apply_override(config, item)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Cross-field checks with messages that name the keys."""
    m, o, t, e = config.model, config.optim, config.train, config.engine
    if m.downsample not in (1, 2, 3, 4, 5, 6):
        raise ConfigError(f"model.downsample must be a small positive integer (2/3/4), got {m.downsample}")
    if m.init_from is None and m.llm_path is None and m.llm_config is None:
        raise ConfigError("the model needs an LLM: set model.init_from, model.llm_path or model.llm_config")
    if m.llm_config is not None and m.llm_path is None and m.tokenizer_path is None and m.init_from is None:
        raise ConfigError("model.llm_config builds a random LLM; give its tokenizer with model.tokenizer_path")
    if o.schedule not in ("official", "cosine", "constant"):
        raise ConfigError(f"optim.schedule must be official, cosine or constant, got {o.schedule!r}")
    if o.grad_accum < 1:
        raise ConfigError("optim.grad_accum must be >= 1")
    if t.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision must be auto, fp32 or bf16, got {t.precision!r}")
    if e.type not in ("single", "ddp", "deepspeed"):
        raise ConfigError(f"engine.type must be single, ddp or deepspeed, got {e.type!r}")
    if e.type == "deepspeed" and not e.deepspeed_config:
        raise ConfigError("engine.type=deepspeed needs engine.deepspeed_config (a DeepSpeed JSON file)")
    if config.data.sampler not in ("dynamic", "fixed"):
        raise ConfigError(f"data.sampler must be dynamic or fixed, got {config.data.sampler!r}")
    bad = sorted(set(config.export.formats) - {"mooer", "official"})
    if bad:
        raise ConfigError(f"export.formats: unknown format(s) {bad}; choose from mooer, official")
