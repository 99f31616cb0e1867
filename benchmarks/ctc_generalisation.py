"""How well a model's CTC head generalises: greedy CTC decoding on training vs held-out utterances.

A model trained from scratch on one rendering per sentence can learn its training sentences instead of
the speech (benchmarks/RESULTS_demo.md, stages 3c/3d). This decodes the first ``--utterances`` zh and en
utterances of each manifest with the encoder's CTC head alone (best path, repeats and blanks removed) and
scores them like ``mooer eval``: zh CER (compute-wer char mode), en WER (normalised).

    python benchmarks/ctc_generalisation.py                                   # the bundled demo model
    python benchmarks/ctc_generalisation.py --model exp/stage3d/export/mooer --utterances 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mooer.api import MooER
from mooer.data.manifest import read_manifest
from mooer.evaluation.wer import score_wer
from mooer.inference.ctc_prefix import ctc_best_path

DATA = Path(__file__).resolve().parents[1] / "recipes" / "synthetic" / "data"


def ctc_greedy(model: MooER, utterance) -> str:
    features = model.featurize_waveform(utterance.load_audio(), utterance.id)
    net = model.network
    with torch.no_grad():
        states = net.encoder(features[None].to(net.dtype), torch.tensor([features.shape[0]]))
        return model.text_of(ctc_best_path(net.ctc_log_probs(states))[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a mooer model with a CTC head (default: the bundled one)")
    p.add_argument("--manifests", nargs="+", default=[str(DATA / "train_r0.jsonl"), str(DATA / "dev.jsonl")],
                   help="default: the first rendering of every training sentence (recipe stage 1), and dev")
    p.add_argument("--utterances", type=int, default=150, help="per manifest and language (default 150)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = MooER.from_pretrained(args.model, device="cpu")
    if model.network.ctc_head is None:
        raise SystemExit(f"{args.model or 'the bundled model'} has no CTC head")
    print("| manifest | zh CER | en WER |\n|---|---|---|")
    for manifest in args.manifests:
        utterances = read_manifest(manifest).utterances
        cells = []
        for lang, scoring in (("zh", {}), ("en", {"mode": "word", "normalize": True})):
            chosen = [u for u in utterances if u.lang == lang][: args.utterances]
            refs = {u.id: u.text for u in chosen}
            hyps = {u.id: ctc_greedy(model, u) for u in chosen}
            cells.append(f"{score_wer(refs, hyps, **scoring).overall.rate:.1f} %")
        print(f"| {Path(manifest).name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
