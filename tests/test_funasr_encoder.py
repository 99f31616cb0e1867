"""The encoder's architecture from FunASR's config.yaml, and FunASR model directories as the encoder source.

The head count leaves no trace in the weights' shapes, so these tests check mooer's encoder against FunASR's
own SANMEncoder (funasr, installed --no-deps by scripts/setup.sh --test) built from the same config.yaml, on real features, for head counts
other than Paraformer-large's 4.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import shutil
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

# Importing funasr imports every module of it, and one (funasr/bin/realtime_ws.py) calls logging.basicConfig
# at import time: undo that, so that collecting this file does not change the logging of other tests.
_root = logging.getLogger()
_level, _handlers = _root.level, list(_root.handlers)
from funasr.models.sanm.encoder import SANMEncoder as FunASRSANMEncoder  # noqa: E402

_root.setLevel(_level)
for _handler in [h for h in _root.handlers if h not in _handlers]:
    _root.removeHandler(_handler)

from fixtures_path import AM_MVN, AUDIO, CLIPS, OFFICIAL_TINY  # noqa: E402
from mooer.api import MooER  # noqa: E402
from mooer.checkpoint import load_checkpoint, load_encoder  # noqa: E402
from mooer.cli import main  # noqa: E402
from mooer.decoding import PRESETS  # noqa: E402
from mooer.errors import CheckpointError  # noqa: E402
from mooer.funasr_config import FUNASR_SANM_DEFAULTS, encoder_config_to_yaml  # noqa: E402
from mooer.models.sanm import SANMEncoder, SANMEncoderConfig  # noqa: E402
from mooer.prompting import collate_tokens, pad_features  # noqa: E402

FRONTEND_CONF = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                 "lfr_m": 7, "lfr_n": 6}
# Fake non-encoder keys of a FunASR Paraformer model.pt: they must be ignored, not loaded or refused.
OTHER_KEYS = {"decoder.decoders.0.self_attn.fsmn_block.weight": (48, 1, 11), "decoder.output_layer.weight": (10, 48),
              "predictor.cif_output.weight": (1, 48), "predictor.cif_output.bias": (1,), "ctc.ctc_lo.weight": (10, 48)}
# The official-tiny encoder (fixtures README §1): 64 wide, 4 heads, FFN 128, 3 blocks.
TINY_CONF = {"output_size": 64, "attention_heads": 4, "linear_units": 128, "num_blocks": 3}


def encoder_conf(**fields) -> dict:
    """A Paraformer-style encoder_conf (as in FunASR's released config.yaml files), small by default."""
    conf = {"output_size": 48, "attention_heads": 4, "linear_units": 96, "num_blocks": 3, "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True, "kernel_size": 11,
            "sanm_shfit": 0, "selfattention_layer_type": "sanm"}
    conf.update(fields)
    return conf


def write_config(directory: Path, conf: dict, **top) -> Path:
    data = {"model": "Paraformer", "encoder": "SANMEncoder", "encoder_conf": conf,
            "decoder": "ParaformerSANMDecoder", "decoder_conf": {"attention_heads": 4},
            "predictor": "CifPredictorV2", "frontend": "WavFrontend", "frontend_conf": dict(FRONTEND_CONF)}
    data.update(top)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def funasr_encoder(conf: dict, seed: int) -> FunASRSANMEncoder:
    """FunASR's SANMEncoder built as FunASR builds it from config.yaml, with random weights (LayerNorms too)."""
    torch.manual_seed(seed)
    encoder = FunASRSANMEncoder(input_size=560, **conf)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return encoder.eval()


def write_funasr_model_dir(directory: Path, conf: dict, seed: int = 0) -> FunASRSANMEncoder:
    """A FunASR model directory: model.pt (encoder.* plus decoder/predictor/CTC keys), config.yaml, am.mvn."""
    encoder = funasr_encoder(conf, seed)
    directory.mkdir(parents=True)
    state = OrderedDict((f"encoder.{k}", v) for k, v in encoder.state_dict().items())
    state.update((k, torch.randn(shape)) for k, shape in OTHER_KEYS.items())
    torch.save(state, directory / "model.pt")
    write_config(directory, conf)
    shutil.copy(AM_MVN, directory / "am.mvn")
    return encoder


def run_both(ours, theirs, feats: list[torch.Tensor]) -> None:
    """Same output as FunASR's encoder on each utterance alone and on the padded batch (valid frames)."""
    padded, lengths = pad_features(feats)
    with torch.no_grad():
        for f in feats:
            n = torch.tensor([f.shape[0]])
            torch.testing.assert_close(ours(f[None], n), theirs(f[None], n)[0], rtol=0, atol=1e-5)
        a, b = ours(padded, lengths), theirs(padded, lengths)[0]
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(a[i, :n], b[i, :n], rtol=0, atol=1e-5)


def test_funasr_defaults_are_funasrs():
    """Fields missing from encoder_conf take FunASR's constructor defaults: the table must be FunASR's."""
    params = inspect.signature(FunASRSANMEncoder.__init__).parameters
    theirs = {k: p.default for k, p in params.items() if k not in ("self", "input_size")}
    theirs["pos_enc_class"] = theirs["pos_enc_class"].__name__
    assert theirs == FUNASR_SANM_DEFAULTS


# sanm_shfit moves the FSMN window; FunASR ignores a negative one.
@pytest.mark.parametrize("heads,shift", [(3, 0), (2, 0), (3, 2), (2, -3)])
def test_funasr_model_directory_matches_funasr_encoder(tmp_path, ref_tensors, caplog, heads, shift):
    theirs = write_funasr_model_dir(tmp_path / "funasr", encoder_conf(attention_heads=heads, sanm_shfit=shift),
                                    seed=heads)
    with caplog.at_level(logging.INFO, logger="mooer"):
        ours = load_encoder(tmp_path / "funasr").eval()
    assert ours.config.attention_heads == heads and ours.config.sanm_shift == shift
    assert ours.config.d_model == 48 and ours.config.num_blocks == 3
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and f"{len(OTHER_KEYS)} keys outside the encoder" in ignored[0]
    assert "ctc, decoder, predictor" in ignored[0]
    run_both(ours, theirs, [ref_tensors[f"{c}/feats"] for c in CLIPS])

    # Without config.yaml the shapes are the same, the 4 heads of Paraformer-large are assumed (and logged),
    # and the output is wrong: the case this config exists for.
    (tmp_path / "funasr" / "config.yaml").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mooer"):
        assumed = load_encoder(tmp_path / "funasr").eval()
    assert assumed.config.attention_heads == 4
    assert any("assuming Paraformer-large's attention_heads=4" in r.getMessage() for r in caplog.records)
    f = ref_tensors["demo/feats"]
    with torch.no_grad():
        diff = (assumed(f[None], torch.tensor([f.shape[0]])) - theirs(f[None], torch.tensor([f.shape[0]]))[0])
    assert diff.abs().max() > 1e-2


def test_funasr_model_directory_is_loaded_strictly(tmp_path):
    write_funasr_model_dir(tmp_path / "funasr", encoder_conf(attention_heads=3))
    path = tmp_path / "funasr" / "model.pt"
    state = torch.load(path, weights_only=True)
    state["encoder.encoders.1.module.norm1.weight"] = state.pop("encoder.encoders.1.norm1.weight")
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_encoder(tmp_path / "funasr")
    msg = str(e.value)
    assert "missing keys ['encoders.1.norm1.weight']" in msg
    assert "unexpected keys ['encoders.1.module.norm1.weight']" in msg and "model.pt" in msg
    # a training checkpoint that wraps the state dict (as FunASR's trainer saves it) is unwrapped
    del state["encoder.encoders.1.module.norm1.weight"]
    torch.save({"state_dict": state, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"missing keys \['encoders.1.norm1.weight'\]"):
        load_encoder(tmp_path / "funasr")


# --------------------------------------------------------------------------------- config.yaml checks


def encoder_dir_with(tmp_path, conf: dict | None = None, **top) -> Path:
    """A paraformer_encoder/-style directory: the official-tiny weights with a config.yaml."""
    d = tmp_path / "enc"
    d.mkdir()
    shutil.copy(OFFICIAL_TINY / "paraformer_encoder" / "paraformer-encoder.pth", d)
    shutil.copy(AM_MVN, d)
    write_config(d, encoder_conf(**TINY_CONF) if conf is None else conf, **top)
    return d


@pytest.mark.parametrize("field,value,evidence", [
    ("output_size", 512, "encoders0.0.self_attn.linear_q_k_v.weight has shape (192, 560) (that is output_size 64)"),
    ("linear_units", 2048, "encoders0.0.feed_forward.w_1.weight has shape (128, 64) (that is linear_units 128)"),
    ("num_blocks", 50, "encoders0.0 and 2 layers encoders.N (that is num_blocks 3)"),
    ("kernel_size", 15, "encoders0.0.self_attn.fsmn_block.weight has shape (64, 1, 11) (that is kernel_size 11)"),
])
def test_config_contradicting_the_weights_names_field_and_shape(tmp_path, field, value, evidence):
    d = encoder_dir_with(tmp_path, encoder_conf(**{**TINY_CONF, field: value}))
    with pytest.raises(CheckpointError) as e:
        load_encoder(d)
    assert f"encoder_conf.{field} = {value} contradicts the weights" in str(e.value)
    assert evidence in str(e.value) and "config.yaml" in str(e.value)


def test_a_missing_field_takes_funasrs_default(tmp_path):
    conf = encoder_conf(**TINY_CONF)
    del conf["output_size"]  # FunASR would build 256 wide, not what the weights hold
    with pytest.raises(CheckpointError, match=r"output_size = 256 \(FunASR's default: config.yaml does not set it\)"):
        load_encoder(encoder_dir_with(tmp_path, conf))


@pytest.mark.parametrize("change,message", [
    ({"encoder": "ConformerEncoder"}, "encoder 'ConformerEncoder' is not supported"),
    ({"normalize_before": False}, "encoder_conf.normalize_before = False is not supported"),
    ({"input_layer": "conv2d"}, "encoder_conf.input_layer = 'conv2d' is not supported; mooer implements input_layer: 'pe'"),
    ({"input_layer": None}, "encoder_conf.input_layer = None is not supported"),
    ({"selfattention_layer_type": "selfattn"}, "selfattention_layer_type = 'selfattn' is not supported"),
    ({"lora_list": ["q", "v"]}, "LoRA inside the encoder is not supported"),
    ({"sanm_shift": 1}, "encoder_conf has ['sanm_shift'], which FunASR's SANMEncoder does not take"),
    ({"attention_heads": 3}, "attention_heads = 3 does not divide output_size 64"),
    ({"attention_heads": "4"}, "encoder_conf.attention_heads must be an integer, got '4'"),
    ({"sanm_shfit": 6}, "encoder_conf.sanm_shfit = 6 moves the FSMN window past kernel_size 11"),
    ({"frontend_conf": {**FRONTEND_CONF, "lfr_m": 5}}, "frontend_conf.lfr_m = 5, but mooer's front end uses 7"),
    ({"frontend_conf": {**FRONTEND_CONF, "lfr_n": 3}}, "frontend_conf.lfr_n = 3, but mooer's front end uses 6"),
    ({"frontend_conf": {**FRONTEND_CONF, "n_mels": 128}}, "frontend_conf.n_mels = 128, but mooer's front end uses 80"),
    ({"input_size": 80}, "input_size = 80 contradicts the weights"),
])
def test_unsupported_config_is_a_clear_error(tmp_path, change, message):
    conf = encoder_conf(**TINY_CONF)
    top = {}
    for key, value in change.items():
        if key in ("encoder", "frontend_conf", "input_size"):
            top[key] = value
        else:
            conf[key] = value
    with pytest.raises(CheckpointError) as e:
        load_encoder(encoder_dir_with(tmp_path, conf, **top))
    assert message in str(e.value) and "config.yaml" in str(e.value)


def test_a_matching_frontend_and_the_older_encoder_name_are_accepted(tmp_path):
    d = encoder_dir_with(tmp_path, encoder_conf(**TINY_CONF), encoder="sanm", input_size=560)
    assert load_encoder(d).config.attention_heads == 4


# ------------------------------------------------------------------------------ releases and the CLI


def release_with_adapter_for(tmp_path, d_model: int, encoder_weights: dict | None = None, seed: int = 0) -> Path:
    """A copy of official-tiny whose adapter takes ``d_model``-wide encoder output (random, as the fixture's)
    and whose paraformer_encoder/ holds ``encoder_weights`` (None: the fixture's 64-wide 4-head encoder)."""
    root = tmp_path / "release"
    shutil.copytree(OFFICIAL_TINY, root)
    if encoder_weights is not None:
        torch.save(OrderedDict(encoder_weights), root / "paraformer_encoder" / "paraformer-encoder.pth")
    torch.manual_seed(seed)
    torch.save(OrderedDict({
        "encoder_projector.linear1.weight": torch.randn(2048, 2 * d_model) * 0.05,
        "encoder_projector.linear1.bias": torch.randn(2048) * 0.05,
        "encoder_projector.linear2.weight": torch.randn(64, 2048) * 0.05,
        "encoder_projector.linear2.bias": torch.randn(64) * 0.05,
    }), root / "asr_ast_mtl" / "adapter_project.pt")
    return root


def funasr_pipeline_ids(model: MooER, theirs, wav: Path, task: str) -> list[int]:
    """Decoding with FunASR's encoder in place of mooer's (mooer's features, adapter, prompt and LLM)."""
    feats, _ = model.featurize(wav)
    with torch.no_grad():
        enc = theirs(feats[None], torch.tensor([feats.shape[0]]))[0]
        audio = model.network.adapter(enc)
    tokens = collate_tokens([audio.shape[1]], [model.prompts.prompt_ids(task)], model.prompts.pad_id)
    with torch.no_grad():
        embeds = model.network.embed(tokens, audio)
    return model.network.generate(embeds, tokens.attention_mask, PRESETS["official"])[0]


@pytest.mark.parametrize("source", ["release config.yaml", "--encoder"])
def test_three_head_release_transcribes_as_with_funasrs_encoder(tmp_path, capsys, ref_tensors, source):
    """`mooer transcribe` on a release whose encoder has 3 heads (said by config.yaml) decodes exactly what
    the same release decodes with FunASR's SANMEncoder built from that config."""
    conf = encoder_conf(attention_heads=3)
    theirs = write_funasr_model_dir(tmp_path / "funasr", conf, seed=3)
    if source == "release config.yaml":
        root = release_with_adapter_for(tmp_path, 48, theirs.state_dict())
        write_config(root / "paraformer_encoder", conf)
        encoder, args = None, []
    else:  # the release keeps its own 64-wide 4-head encoder: --encoder must replace it
        root = release_with_adapter_for(tmp_path, 48)
        encoder, args = tmp_path / "funasr", ["--encoder", str(tmp_path / "funasr")]

    model = MooER.from_pretrained(root, encoder=encoder, device="cpu", dtype="float32")
    assert model.network.encoder.config.attention_heads == 3
    run_both(model.network.encoder, theirs, [ref_tensors[f"{c}/feats"] for c in CLIPS])
    files = [AUDIO / f"{c}.wav" for c in ("demo", "zh1", "en1")]
    results = model.transcribe(files, task="ast")
    for wav, res in zip(files, results):
        assert res.token_ids == funasr_pipeline_ids(model, theirs, wav, "ast")
    # the ids do depend on the head count: the same weights run with 4 heads decode something else
    four = SANMEncoder(dataclasses.replace(model.network.encoder.config, attention_heads=4))
    four.load_state_dict(model.network.encoder.state_dict())
    assert results[0].token_ids != funasr_pipeline_ids(model, lambda x, n: (four.eval()(x, n),), files[0], "ast")

    capsys.readouterr()
    assert main(["transcribe", *map(str, files), "--model", str(root), *args, "--task", "ast", "--format", "jsonl",
                 "--device", "cpu", "--dtype", "float32"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == [r.text for r in results]


def test_four_head_config_reproduces_the_golden_outputs(tmp_path, ref_tensors, ref_json):
    root = tmp_path / "release"
    shutil.copytree(OFFICIAL_TINY, root)
    write_config(root / "paraformer_encoder", encoder_conf(**TINY_CONF))
    model = MooER.from_pretrained(root, device="cpu", dtype="float32")
    assert model.loaded.info["encoder_config"] == str(root / "paraformer_encoder" / "config.yaml")
    for clip in CLIPS:
        feats = ref_tensors[f"{clip}/feats"]
        with torch.no_grad():
            out = model.network.encoder(feats[None], torch.tensor([feats.shape[0]]))[0]
        torch.testing.assert_close(out, ref_tensors[f"{clip}/encoder_out"], rtol=0, atol=1e-5)
    results = model.transcribe([AUDIO / f"{c}.wav" for c in CLIPS], task="ast")
    assert [r.token_ids for r in results] == [ref_json["clips"][c]["tasks"]["ast"]["beam"]["ids"] for c in CLIPS]

    # The config is trusted for the head count, which the weights cannot contradict: 2 heads on this 4-head
    # encoder loads, and computes something else.
    write_config(root / "paraformer_encoder", encoder_conf(**{**TINY_CONF, "attention_heads": 2}))
    wrong = load_checkpoint(root, device="cpu", dtype="float32").model.encoder
    feats = ref_tensors["demo/feats"]
    with torch.no_grad():
        out = wrong(feats[None], torch.tensor([feats.shape[0]]))[0]
    assert (out - ref_tensors["demo/encoder_out"]).abs().max() > 1e-2

    # ... but a width the weights contradict is refused, by load_checkpoint too
    write_config(root / "paraformer_encoder", encoder_conf(**{**TINY_CONF, "output_size": 512}))
    with pytest.raises(CheckpointError, match=r"encoder_conf.output_size = 512 contradicts the weights: "
                                              r"encoders0.0.self_attn.linear_q_k_v.weight has shape \(192, 560\)"):
        load_checkpoint(root, device="cpu")


def test_funasr_model_directory_as_encoder_of_a_release_reproduces_golden_ids(tmp_path, ref_json, caplog):
    """The official-tiny encoder repackaged as a FunASR model directory, given with --encoder to a release
    that has no paraformer_encoder/ at all: the golden ids."""
    funasr_dir = tmp_path / "funasr"
    funasr_dir.mkdir()
    weights = torch.load(OFFICIAL_TINY / "paraformer_encoder" / "paraformer-encoder.pth", weights_only=True)
    state = OrderedDict((f"encoder.{k}", v) for k, v in weights.items())
    state.update((k, torch.randn(shape)) for k, shape in OTHER_KEYS.items())
    torch.save(state, funasr_dir / "model.pt")
    write_config(funasr_dir, encoder_conf(**TINY_CONF))
    shutil.copy(AM_MVN, funasr_dir / "am.mvn")
    root = tmp_path / "release"
    shutil.copytree(OFFICIAL_TINY, root, ignore=shutil.ignore_patterns("paraformer_encoder"))

    with pytest.raises(CheckpointError, match="neither the official release layout"):
        load_checkpoint(root, device="cpu")
    with caplog.at_level(logging.INFO, logger="mooer"):
        model = MooER.from_pretrained(root, encoder=funasr_dir, device="cpu", dtype="float32")
    assert model.loaded.info["encoder_weights"] == str(funasr_dir / "model.pt")
    assert sum("keys outside the encoder" in r.getMessage() for r in caplog.records) == 1
    res = model.transcribe(AUDIO / "zh1.wav", task="asr")[0]
    assert res.token_ids == ref_json["clips"]["zh1"]["tasks"]["asr"]["beam"]["ids"]

    # without am.mvn beside the weights, the encoder's CMVN is missing: an error naming the file
    (funasr_dir / "am.mvn").unlink()
    with pytest.raises(CheckpointError, match="am.mvn"):
        load_checkpoint(root, encoder=funasr_dir, device="cpu")


def test_encoder_weights_in_the_adapter_conflict_with_an_explicit_encoder(tmp_path):
    root = tmp_path / "release"
    shutil.copytree(OFFICIAL_TINY, root)
    path = root / "asr_ast_mtl" / "adapter_project.pt"
    adapter = torch.load(path, weights_only=True)
    weights = torch.load(root / "paraformer_encoder" / "paraformer-encoder.pth", weights_only=True)
    adapter.update((f"encoder.model.{k}", v) for k, v in weights.items())  # a release that trained its encoder
    torch.save(adapter, path)
    assert load_checkpoint(root, device="cpu").model.encoder.config.attention_heads == 4
    with pytest.raises(CheckpointError, match="would replace the encoder given with --encoder"):
        load_checkpoint(root, encoder=root / "paraformer_encoder", device="cpu")


def test_encoder_option_is_refused_for_a_mooer_directory(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "native")
    with pytest.raises(CheckpointError, match="--encoder applies to the official layout only"):
        load_checkpoint(out, encoder=OFFICIAL_TINY / "paraformer_encoder", device="cpu")


# ------------------------------------------------------------------------------------ saving the heads


def test_native_format_keeps_three_heads(tmp_path, ref_tensors):
    conf = encoder_conf(attention_heads=3)
    theirs = write_funasr_model_dir(tmp_path / "funasr", conf, seed=3)
    root = release_with_adapter_for(tmp_path, 48)
    model = MooER.from_pretrained(root, encoder=tmp_path / "funasr", device="cpu", dtype="float32")
    out = model.save_pretrained(tmp_path / "native")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["encoder"]["attention_heads"] == 3 and config["encoder"]["d_model"] == 48
    assert config["source"]["encoder_weights"] == str(tmp_path / "funasr" / "model.pt")
    again = MooER.from_pretrained(out, device="cpu", dtype="float32")
    assert again.network.encoder.config == model.network.encoder.config
    run_both(again.network.encoder, theirs, [ref_tensors["zh2/feats"], ref_tensors["short/feats"]])


def test_official_export_writes_a_config_that_funasr_and_mooer_read(tmp_path, ref_tensors):
    """An exported release records its encoder's heads in paraformer_encoder/config.yaml; mooer loads it
    back with 2 heads, and FunASR builds an encoder from its encoder_conf that gives the same output."""
    from mooer.training.export import collect_parts, write_official

    loaded = load_checkpoint(OFFICIAL_TINY, device="cpu", dtype="float32")
    theirs = funasr_encoder(encoder_conf(**{**TINY_CONF, "attention_heads": 2}), seed=2)
    two_heads = SANMEncoder(SANMEncoderConfig(d_model=64, attention_heads=2, linear_units=128, num_blocks=3))
    two_heads.load_state_dict(theirs.state_dict())
    loaded.model.encoder = two_heads
    built = SimpleNamespace(model=loaded.model, tokenizer=loaded.tokenizer)
    out = write_official(collect_parts(built, torch.float32), built, loaded.cmvn, tmp_path / "official",
                         "asr_ast_mtl")
    data = yaml.safe_load((out / "paraformer_encoder" / "config.yaml").read_text(encoding="utf-8"))
    assert data["encoder_conf"]["attention_heads"] == 2
    again = load_checkpoint(out, device="cpu", dtype="float32").model.encoder
    assert again.config == two_heads.config
    rebuilt = FunASRSANMEncoder(input_size=560, **data["encoder_conf"]).eval()
    rebuilt.load_state_dict(again.state_dict(), strict=True)
    run_both(again, rebuilt, [ref_tensors["demo/feats"], ref_tensors["en1/feats"]])
    run_both(again, theirs, [ref_tensors["demo/feats"]])


def test_config_yaml_cannot_express_another_layer_norm_eps():
    with pytest.raises(CheckpointError, match="layer_norm_eps"):
        encoder_config_to_yaml(SANMEncoderConfig(layer_norm_eps=1e-5))
