"""FunASR's ``config.yaml``: the SANM encoder's architecture, checked against the weights.

The head count (and the FSMN shift) leave no trace in the tensor shapes: a 3-head encoder loads into a
4-head model without any shape error and computes something else. A FunASR model directory (and a release's
``paraformer_encoder/`` that has one) carries a ``config.yaml`` whose ``encoder_conf`` holds the constructor
arguments of FunASR's ``SANMEncoder``. :func:`encoder_config_from_yaml` turns it into a
:class:`~mooer.models.sanm.SANMEncoderConfig`:

- a field missing from ``encoder_conf`` takes FunASR's constructor default, since that is what FunASR itself
  would build from the file (:data:`FUNASR_SANM_DEFAULTS`);
- a field that the shapes also determine must agree with them: an error names the field and the tensor;
- a value mooer does not implement (another encoder class, post-LN, an input layer other than ``pe``, encoder
  LoRA, ...) or a key FunASR's constructor does not take is an error;
- ``frontend_conf`` must describe mooer's front end (16 kHz, 80 mel bins, 25/10 ms Hamming, LFR 7/6).

The config is trusted for what the shapes cannot show (``attention_heads``, ``sanm_shfit``). Without a
``config.yaml`` the loader assumes Paraformer-large's values and logs that it did.
:func:`encoder_config_to_yaml` writes the file back, so an exported release records its own architecture.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mooer.errors import CheckpointError
from mooer.features import FEATURE_DIM, FRAME_LENGTH, FRAME_SHIFT, LFR_M, LFR_N, NUM_MEL_BINS, SAMPLE_RATE
from mooer.models.sanm import SANMEncoderConfig

CONFIG_FILE = "config.yaml"

#: Names under which FunASR registers the SANM encoder (``SANMEncoder`` in FunASR >= 1.0; ``sanm`` in the
#: ESPnet-style configs of FunASR 0.x).
ENCODER_NAMES = ("SANMEncoder", "sanm")

#: FunASR 1.4's ``SANMEncoder.__init__`` keyword defaults (funasr/models/sanm/encoder.py), except
#: ``input_size``, which FunASR passes from the front end. A test compares this with the installed FunASR.
FUNASR_SANM_DEFAULTS = {
    "output_size": 256,
    "attention_heads": 4,
    "linear_units": 2048,
    "num_blocks": 6,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.0,
    "input_layer": "conv2d",
    "pos_enc_class": "SinusoidalPositionEncoder",
    "normalize_before": True,
    "concat_after": False,
    "positionwise_layer_type": "linear",
    "positionwise_conv_kernel_size": 1,
    "padding_idx": -1,
    "interctc_layer_idx": [],
    "interctc_use_conditioning": False,
    "kernel_size": 11,
    "sanm_shfit": 0,
    "lora_list": None,
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "selfattention_layer_type": "sanm",
    "tf2torch_tensor_name_prefix_torch": "encoder",
    "tf2torch_tensor_name_prefix_tf": "seq2seq/encoder",
}

#: encoder_conf field -> SANMEncoderConfig field, for the architecture mooer builds.
_ARCHITECTURE = {
    "output_size": "d_model",
    "attention_heads": "attention_heads",
    "linear_units": "linear_units",
    "num_blocks": "num_blocks",
    "kernel_size": "kernel_size",
    "sanm_shfit": "sanm_shift",  # sic: FunASR's spelling
}

#: The only values mooer implements (pre-LN SANM blocks, linear FFN, sinusoidal "pe" input layer).
_REQUIRED = {
    "input_layer": "pe",
    "normalize_before": True,
    "concat_after": False,
    "positionwise_layer_type": "linear",
    "selfattention_layer_type": "sanm",
}

# Accepted without effect on the encoder's output: training-only dropout; pos_enc_class, used only by
# input_layer "linear"; positionwise_conv_kernel_size, only by the conv1d FFNs; padding_idx, only by
# input_layer "embed"; interctc_layer_idx, which only adds intermediate outputs; lora_rank/alpha/dropout
# without lora_list; the TensorFlow name prefixes, used only to convert TF checkpoints.

#: FunASR's WavFrontend keyword -> the value of mooer's front end (mooer.features); only the keys present in
#: frontend_conf are checked (the weights' input width, checked separately, catches a missing lfr_m).
_FRONTEND = {
    "fs": SAMPLE_RATE,
    "window": "hamming",
    "n_mels": NUM_MEL_BINS,
    "frame_length": FRAME_LENGTH * 1000 // SAMPLE_RATE,  # ms
    "frame_shift": FRAME_SHIFT * 1000 // SAMPLE_RATE,  # ms
    "lfr_m": LFR_M,
    "lfr_n": LFR_N,
    "snip_edges": True,
}

# FunASR's LayerNorm (funasr/models/transformer/layer_norm.py) has this eps, with no argument to change it.
_FUNASR_LAYER_NORM_EPS = 1e-12


def read_yaml(path: Path) -> dict:
    """A YAML mapping; unreadable or non-mapping content is a CheckpointError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path}: cannot be read as YAML ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a YAML mapping, found {type(data).__name__}")
    return data


def _int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{where} must be an integer, got {value!r}")
    return value


def check_frontend(frontend_conf: dict, path: Path) -> None:
    """Each key of ``frontend_conf`` that mooer's front end fixes must have mooer's value."""
    if not isinstance(frontend_conf, dict):
        raise CheckpointError(f"{path}: frontend_conf must be a mapping, got {frontend_conf!r}")
    for key, ours in _FRONTEND.items():
        if key in frontend_conf and frontend_conf[key] != ours:
            raise CheckpointError(
                f"{path}: frontend_conf.{key} = {frontend_conf[key]!r}, but mooer's front end uses {ours!r} "
                f"(16 kHz Kaldi fbank, {NUM_MEL_BINS} mel bins, 25/10 ms Hamming windows, LFR m={LFR_M} n={LFR_N}); "
                f"this encoder was trained on other features")


def encoder_config_from_yaml(path: Path, shapes: dict[str, tuple[int, str]]) -> SANMEncoderConfig:
    """The encoder architecture of FunASR ``config.yaml`` at ``path``, checked against ``shapes``
    (:meth:`SANMEncoder.shapes_from_state_dict` of the weights it is for)."""
    data = read_yaml(path)
    name = data.get("encoder")
    if name not in ENCODER_NAMES:
        raise CheckpointError(f"{path}: encoder {name!r} is not supported; mooer implements FunASR's "
                              f"SANMEncoder (encoder: SANMEncoder)")
    given = data.get("encoder_conf") or {}
    if not isinstance(given, dict):
        raise CheckpointError(f"{path}: encoder_conf must be a mapping, got {given!r}")
    unknown = sorted(set(given) - set(FUNASR_SANM_DEFAULTS))
    if unknown:
        raise CheckpointError(f"{path}: encoder_conf has {unknown}, which FunASR's SANMEncoder does not take")
    conf = {**FUNASR_SANM_DEFAULTS, **given}

    def origin(key):  # the error says where a value came from: the file, or FunASR's default
        return "" if key in given else " (FunASR's default: config.yaml does not set it)"

    for key, value in _REQUIRED.items():
        if conf[key] != value:
            raise CheckpointError(f"{path}: encoder_conf.{key} = {conf[key]!r}{origin(key)} is not supported; "
                                  f"mooer implements {key}: {value!r}")
    if conf["lora_list"]:
        raise CheckpointError(f"{path}: encoder_conf.lora_list = {conf['lora_list']!r}: LoRA inside the "
                              f"encoder is not supported (merge it into the weights first)")
    if conf["interctc_use_conditioning"] and conf["interctc_layer_idx"]:
        raise CheckpointError(f"{path}: encoder_conf.interctc_use_conditioning is not supported (it feeds "
                              f"intermediate CTC posteriors back into the encoder)")
    if "frontend_conf" in data:
        check_frontend(data["frontend_conf"], path)

    fields = {ours: _int(conf[key], f"{path}: encoder_conf.{key}") for key, ours in _ARCHITECTURE.items()}
    # The shapes determine these; a config that disagrees describes other weights.
    for key, ours in _ARCHITECTURE.items():
        if ours in shapes and fields[ours] != shapes[ours][0]:
            raise CheckpointError(f"{path}: encoder_conf.{key} = {fields[ours]}{origin(key)} contradicts the "
                                  f"weights: {shapes[ours][1]} (that is {key} {shapes[ours][0]})")
    if "input_size" in data and data["input_size"] != shapes["input_size"][0]:
        raise CheckpointError(f"{path}: input_size = {data['input_size']!r} contradicts the weights: "
                              f"{shapes['input_size'][1]} (that is input_size {shapes['input_size'][0]})")
    if (fields["kernel_size"] - 1) // 2 + max(fields["sanm_shift"], 0) > fields["kernel_size"] - 1:
        raise CheckpointError(f"{path}: encoder_conf.sanm_shfit = {fields['sanm_shift']} moves the FSMN window "
                              f"past kernel_size {fields['kernel_size']}")
    if fields["attention_heads"] < 1 or fields["d_model"] % fields["attention_heads"]:
        raise CheckpointError(f"{path}: encoder_conf.attention_heads = {fields['attention_heads']} does not "
                              f"divide output_size {fields['d_model']}")
    return SANMEncoderConfig(input_size=shapes["input_size"][0], layer_norm_eps=_FUNASR_LAYER_NORM_EPS, **fields)


def encoder_config_to_yaml(config: SANMEncoderConfig) -> str:
    """``config.yaml`` text that :func:`encoder_config_from_yaml` (and FunASR) reads back as ``config``."""
    if config.layer_norm_eps != _FUNASR_LAYER_NORM_EPS:
        raise CheckpointError(f"encoder layer_norm_eps {config.layer_norm_eps} cannot be written to a FunASR "
                              f"config.yaml (FunASR's SANMEncoder always uses {_FUNASR_LAYER_NORM_EPS})")
    if config.input_size != FEATURE_DIM:
        raise CheckpointError(f"encoder input_size {config.input_size} is not mooer's feature width {FEATURE_DIM}")
    ours = config.to_dict()
    encoder_conf = {key: ours[field] for key, field in _ARCHITECTURE.items()}
    encoder_conf.update(_REQUIRED)
    encoder_conf["pos_enc_class"] = "SinusoidalPositionEncoder"
    data = {"encoder": "SANMEncoder", "encoder_conf": encoder_conf,
            "frontend": "WavFrontend", "frontend_conf": dict(_FRONTEND)}
    header = ("# The SANM encoder's architecture (FunASR's SANMEncoder arguments), written by mooer: the head count\n"
              "# cannot be read from the weights' shapes.\n")
    return header + yaml.safe_dump(data, sort_keys=False)
