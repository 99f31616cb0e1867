"""Validation during training: dev loss and token accuracy on every rank, then decode metrics on a sample.

:func:`validate` is what the trainer calls. The dev loss is token-weighted and summed over all ranks; the
decode metrics come from greedy decodes made through the inference code itself (:func:`decode_dev`), scored
as CER (Chinese) / WER (English) for asr, BLEU for ast, and both on the two parts of asr_ast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from mooer.prompting import IGNORE_INDEX
from mooer.training.engines import BadBatchStandIn, Engine
from mooer.training.model import BuiltModel, set_train_mode

if TYPE_CHECKING:
    from mooer.data.dataset import Sample
    from mooer.features import Cmvn
    from mooer.training.config import Config, ValidationConfig


def validate(engine: Engine, built: BuiltModel, cmvn: Cmvn, dev_loader, dev_dataset, cfg: Config,
             device: torch.device, ctx_factory: Callable) -> dict:
    """Dev loss (token-weighted), token accuracy (all ranks), then decode metrics on a sample.

    A collective: every rank calls it. ``ctx_factory()`` gives the autocast context of training.
    """
    set_train_mode(built, False)
    loss_sum = tokens = correct = 0.0
    stand_in = BadBatchStandIn(device)
    with torch.no_grad():
        for i, raw in enumerate(dev_loader):
            if cfg.validation.max_batches is not None and i >= cfg.validation.max_batches:
                break
            batch, usable = stand_in(raw)
            if batch is None:  # nothing usable yet: this rank has nothing to run
                continue
            with ctx_factory():
                out = built.model(batch.features, batch.lengths, batch.tokens)
            if not usable:
                continue
            c, n = token_accuracy(out.logits, batch.tokens.labels)
            loss_sum += float(out.loss) * n
            tokens += n
            correct += c
    loss_sum, tokens, correct = engine.all_reduce_sum([loss_sum, tokens, correct])
    result: dict = {"loss": loss_sum / max(tokens, 1), "token_accuracy": correct / max(tokens, 1)}
    n = min(cfg.validation.decode_utterances, len(dev_dataset))
    if n > 0:
        with torch.no_grad():
            decoded = decode_metrics(built, cmvn, dev_dataset, list(range(n)), cfg)
        result.update(decoded["metrics"])
        result["examples"] = decoded["examples"]
    set_train_mode(built, True)
    return result


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(correct, total) of argmax(logits[:, :-1]) against labels[:, 1:] over labelled positions."""
    pred = logits[:, :-1].argmax(-1)
    gold = labels[:, 1:]
    mask = gold != IGNORE_INDEX
    return int((pred.eq(gold) & mask).sum()), int(mask.sum())


def decode_metrics(built: BuiltModel, cmvn: Cmvn, dataset, indices: list[int], cfg: Config) -> dict:
    """Greedy-decode the dev utterances ``indices`` and score them.

    Returns ``{"metrics": {name: value}, "examples": [{id, task, hyp}, ...], "hyps": {task: {id: text}}}``.
    """
    samples = [s for s in (dataset[i] for i in indices) if s is not None]
    hyps = decode_dev(built, cmvn, samples, cfg.validation)
    utt_by_id = {u.id: u for u in dataset.utterances}
    metrics: dict[str, float] = {}
    examples: list[dict] = []
    for task, texts in hyps.items():
        if task == "asr":
            _score_asr({k: (utt_by_id[k].text, h) for k, h in texts.items()}, utt_by_id, metrics, "asr/")
        elif task == "ast":
            _score_ast({k: (utt_by_id[k].translation or "", h) for k, h in texts.items()}, metrics, "ast/")
        else:
            from mooer.tasks import split_multitask

            parts = {k: split_multitask(h) for k, h in texts.items()}
            _score_asr({k: (utt_by_id[k].text, parts[k][0]) for k in texts}, utt_by_id, metrics, "asr_ast/")
            _score_ast({k: (utt_by_id[k].translation or "", parts[k][1]) for k in texts}, metrics, "asr_ast/")
        for k, h in list(texts.items())[:3]:
            examples.append({"id": k, "task": task, "hyp": h})
    metrics["decoded"] = float(sum(len(t) for t in hyps.values()))
    return {"metrics": metrics, "examples": examples, "hyps": hyps}


def decode_dev(built: BuiltModel, cmvn: Cmvn, samples: list[Sample],
               cfg: ValidationConfig) -> dict[str, dict[str, str]]:
    """Decode ``samples`` (each with the task it was drawn for) with the model being trained, through the
    inference pipeline (:class:`mooer.inference.pipeline.Pipeline`: the path of every front end); returns
    ``{task: {utterance id: text}}``. Per task, utterances are decoded longest first in batches of
    ``cfg.decode_batch_size``, with the ``cfg.decoding`` preset and at most ``cfg.max_new_tokens`` tokens.
    """
    from mooer.decoding import get_preset
    from mooer.features import FeatureExtractor
    from mooer.inference.pipeline import Pipeline, Prepared
    from mooer.prompting import PromptBuilder

    pipeline = Pipeline(built.model, built.tokenizer, PromptBuilder(built.tokenizer, built.prompts),
                        FeatureExtractor(cmvn))
    options = get_preset(cfg.decoding)
    by_task: dict[str, list[Prepared]] = {}
    for sample in samples:
        by_task.setdefault(sample.task, []).append(Prepared(sample.id, sample.id, sample.features, 0.0))
    return {task: {r.key: r.text for r in pipeline.decode(items, task, options, cfg.decode_batch_size,
                                                          max_new_tokens=cfg.max_new_tokens)}
            for task, items in by_task.items()}


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _score_asr(pairs: dict[str, tuple[str, str]], utt_by_id: dict, metrics: dict, prefix: str) -> None:
    """``pairs``: id → (reference, hypothesis). CER on Chinese utterances (by the manifest's ``lang``, else by
    the reference's script), WER on the others."""
    from mooer.evaluation import score_wer

    zh = {k: v for k, v in pairs.items() if (utt_by_id[k].lang or ("zh" if _has_cjk(v[0]) else "en")) == "zh"}
    en = {k: v for k, v in pairs.items() if k not in zh}
    if zh:
        r = score_wer({k: v[0] for k, v in zh.items()}, {k: v[1] for k, v in zh.items()}, mode="char")
        metrics[f"{prefix}cer_zh"] = r.rate
    if en:
        r = score_wer({k: v[0] for k, v in en.items()}, {k: v[1] for k, v in en.items()}, mode="word")
        metrics[f"{prefix}wer_en"] = r.rate


def _score_ast(pairs: dict[str, tuple[str, str]], metrics: dict, prefix: str) -> None:
    """``pairs``: id → (reference translation, hypothesis); BLEU over those that have a reference."""
    from mooer.evaluation import score_bleu

    pairs = {k: v for k, v in pairs.items() if v[0].strip()}
    if pairs:
        r = score_bleu({k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()})
        metrics[f"{prefix}bleu"] = r.bleu
