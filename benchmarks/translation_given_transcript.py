"""How well a model translates when the transcript is right: asr_ast with the reference transcript forced.

The demo model's translations are poor (benchmarks/RESULTS_demo.md). This separates the two halves of
asr_ast: after the audio and the asr_ast prompt, the reference transcript and the separator are fed as if
the model had written them, and the model writes only the translation. If that translation is no better
than the one after its own transcript, recognition is not what limits translation: the LLM is.

It scores the first ``--utterances`` zh utterances of the manifest with sacreBLEU (as ``mooer eval``),
each way: the model's own transcript (plain asr_ast decoding) and the reference transcript.

    python benchmarks/translation_given_transcript.py                    # the bundled model, dev split
    python benchmarks/translation_given_transcript.py --model exp/stage3k/export/mooer --utterances 480
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mooer.api import MooER
from mooer.data.manifest import read_manifest
from mooer.decoding import get_preset
from mooer.evaluation.bleu import score_bleu
from mooer.tasks import MULTITASK_SEPARATOR, split_multitask

DATA = Path(__file__).resolve().parents[1] / "recipes" / "synthetic" / "data"


def translate_after(model: MooER, features: list[torch.Tensor], transcripts: list[str], preset: str) -> list[str]:
    """The model's translation of each utterance after ``transcripts`` forced as its asr_ast transcript."""
    forced = [model.tokenizer.encode(t + MULTITASK_SEPARATOR, add_special_tokens=False) for t in transcripts]
    rows = model.pipeline.generate(features, "asr_ast", get_preset(preset), forced=forced)
    return [model.text_of(row.ids).strip() for row in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a mooer model (default: the bundled one)")
    p.add_argument("--manifest", default=str(DATA / "dev.jsonl"), help="default: the recipe's dev split")
    p.add_argument("--utterances", type=int, default=200, help="zh utterances with a translation (default 200)")
    p.add_argument("--preset", default="official", help="decoding preset (default: official, beam 4)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = MooER.from_pretrained(args.model, device="cpu")
    chosen = [u for u in read_manifest(args.manifest).utterances if u.lang == "zh" and u.translation][: args.utterances]
    if not chosen:
        raise SystemExit(f"{args.manifest}: no zh utterance with a translation")
    refs = {u.id: u.translation for u in chosen}
    own, given = {}, {}
    for i in range(0, len(chosen), args.batch_size):
        batch = chosen[i : i + args.batch_size]
        features = [model.featurize_waveform(u.load_audio(), u.id) for u in batch]
        rows = model.pipeline.generate(features, "asr_ast", get_preset(args.preset))  # as `mooer transcribe` does
        own.update((u.id, split_multitask(model.text_of(row.ids))[1]) for u, row in zip(batch, rows))
        given.update(zip((u.id for u in batch), translate_after(model, features, [u.text for u in batch], args.preset)))
    print(f"{len(chosen)} zh utterances of {args.manifest}, preset {args.preset}\n")
    print("| transcript before the translation | BLEU | chrF |\n|---|---|---|")
    for name, hyps in (("the model's own (asr_ast)", own), ("the reference (forced)", given)):
        result = score_bleu(refs, hyps)
        print(f"| {name} | {result.bleu:.1f} | {result.chrf:.1f} |")
    print("\nexamples (reference transcript forced):")
    for u in chosen[:5]:
        print(f"  {u.text} -> {given[u.id]!r} (reference: {u.translation!r})")


if __name__ == "__main__":
    main()
