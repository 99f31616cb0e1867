#!/usr/bin/env bash
# The synthetic MooER recipe: a small demo model that transcribes Mandarin and English speech and
# translates Mandarin speech to English, trained on TTS renderings of recipes/synthetic/sentences.tsv.
#
#   stage 0  system + Python dependencies (espeak-ng, flite, sox; pypinyin)
#   stage 1  corpus: split by sentence, synthesise 16 kHz WAVs, write manifests   (make_corpus.py)
#            (--renderings of every training sentence and language; dev/test: one each; plus one
#            rendering of each --extra pair, training only: train_extra.jsonl, train_extra2.jsonl, ...)
#   stage 2  tokenizer: Qwen2-style byte-level BPE on the training split           (make_tokenizer.py)
#   stage 3  train (twelve `mooer train` runs, conf/demo.yaml + overrides; the last six torchrun DDP)
#   stage 4  decode + score the test split (CER, WER, BLEU)
#   stage 5  install the model as src/mooer/assets/default-model
#   stage 6  hotword test set (make_hotword_set.py): decode with and without the phrase list, score
#            hotword recall, false alarms and CER/WER (the weight sweep: benchmarks/hotword_sweep.py)
#
# Usage (from the repository root or from anywhere):
#   recipes/synthetic/run.sh                          # everything
#   recipes/synthetic/run.sh --stage 1 --stop-stage 2 # corpus + tokenizer only
#   recipes/synthetic/run.sh --stage 1 --stop-stage 1 --limit 100 --jobs 4
#
# Options (each --name value overrides the variable of the same name below):
#   --stage N --stop-stage M   run stages N..M (default 0..5; stage 6 runs only when asked for)
#   --data DIR                 corpus directory (default recipes/synthetic/data)
#   --exp DIR                  experiment directory (default recipes/synthetic/exp/demo)
#   --jobs N                   synthesis processes (default 2)
#   --renderings N             renderings per training sentence and language (default 5)
#   --extra FILE               a list of more pairs for training only; repeat for several, '' for none
#                              (default: extra_sentences.tsv, extra_sentences2.tsv, extra_sentences3.tsv,
#                              40,000 pairs each from Debian's other catalogues: collect_sentences.py)
#   --nproc N                  DDP processes of the last six training runs (default 2)
#   --limit N                  only the first N sentence pairs (default: all)
#   --vocab-size N             tokenizer size incl. 3 special tokens (default 3000)
#   --config FILE              training config (default recipes/synthetic/conf/demo.yaml)
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)

stage=0
stop_stage=5
data=$recipe_dir/data
exp=$recipe_dir/exp/demo
jobs=2
renderings=5
extras=("$recipe_dir/extra_sentences.tsv" "$recipe_dir/extra_sentences2.tsv" "$recipe_dir/extra_sentences3.tsv")
extras_given=0
nproc=2
limit=
vocab_size=3000
config=$recipe_dir/conf/demo.yaml
python=${PYTHON:-python}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --renderings) renderings=$2; shift 2 ;;
    --extra) [[ $extras_given == 1 ]] || extras=(); extras_given=1; [[ -z $2 ]] || extras+=("$2"); shift 2 ;;
    --nproc) nproc=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    --vocab-size|--vocab_size) vocab_size=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "$(date '+%F %T') [stage $1] ${*:2}"; }
timed() { local t0=$SECONDS; "$@"; echo "  ... $((SECONDS - t0)) s"; }
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }

cd "$root"

if run_stage 0; then
  log 0 "dependencies"
  missing=()
  for tool in espeak-ng flite sox; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [[ ${#missing[@]} -gt 0 ]]; then
    sudo_=; [[ $(id -u) -ne 0 ]] && sudo_=sudo
    $sudo_ apt-get update && $sudo_ apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  $python -c "import pypinyin" 2>/dev/null || $python -m pip install "pypinyin>=0.50"
  espeak-ng --voices=cmn | grep -qi cmn-latn-pinyin || { echo "espeak-ng lacks the cmn-latn-pinyin voice" >&2; exit 1; }
fi

if run_stage 1; then
  log 1 "corpus -> $data"
  extra_args=()
  for f in "${extras[@]}"; do extra_args+=(--extra-train "$f"); done
  timed nice -n 10 $python "$recipe_dir/make_corpus.py" --out "$data" --jobs "$jobs" ${limit:+--limit "$limit"} \
    --zh-per-sentence "$renderings" --en-per-sentence "$renderings" "${extra_args[@]}"
  # the first rendering of each training sentence: what stage 3's first six runs train on
  grep -E '"id": "(zh|en)_[0-9a-f]+_0"' "$data/train.jsonl" > "$data/train_r0.jsonl"
  # the last runs: the first two renderings and the first N extra lists, train_moreN.jsonl (no number for N = 1,
  # as make_corpus.py names the lists' own manifests: train_extra.jsonl, train_extra2.jsonl, ...): runs (i) and
  # (j) train on train_more.jsonl, (k) on train_more2.jsonl, (l) on train_more3.jsonl (with fewer lists: all
  # there are)
  numbered() { if (($2 == 1)); then echo "$data/$1.jsonl"; else echo "$data/$1$2.jsonl"; fi; }
  grep -E '"id": "(zh|en)_[0-9a-f]+_[01]"' "$data/train.jsonl" > "$data/train_more.part"
  for i in 1 2 3; do
    ((i > ${#extras[@]})) || cat "$(numbered train_extra $i)" >> "$data/train_more.part"
    cp "$data/train_more.part" "$(numbered train_more $i)"
  done
  rm "$data/train_more.part"
fi

if run_stage 2; then
  log 2 "tokenizer -> $data/tokenizer"
  timed $python "$recipe_dir/make_tokenizer.py" --manifest "$data/train_r0.jsonl" --out "$data/tokenizer" \
    --vocab-size "$vocab_size" --verify
fi

if run_stage 3; then
  # Twelve runs of `mooer train`: (a) everything from scratch with an auxiliary CTC loss on the encoder,
  # 3 epochs; (b) a continuation from (a)'s export with a fresh cosine schedule, 2 epochs; (c) a continuation
  # from (b) with guided attention (LLM head 1.0 pulled to the CTC forced alignment), asr-heavy task mix,
  # 8 epochs; (d) (c) resumed from its last checkpoint under a 16-epoch schedule (8 more epochs) with the
  # CTC loss weighted 1.0: the CTC head matters most, as decoding scores the LLM's beams with it.
  # Without (c) the LLM kept stepping through the audio at a fixed rate and never read it.
  log 3 "train -> $exp"
  timed mooer train --config "$config" train.exp_dir="$exp/stage1" data.train="$data/train_r0.jsonl" \
    data.dev="$data/dev.jsonl" model.tokenizer_path="$data/tokenizer"
  continue_from() {  # $1: the run to start from; the rest: more overrides
    local from=$1; shift
    mooer train --config "$config" data.train="$data/train_r0.jsonl" data.dev="$data/dev.jsonl" \
      model.init_from="$exp/$from/export/mooer" model.cmvn=null model.llm_config=null 'model.encoder={}' \
      model.tokenizer_path=null optim.warmup_steps=50 "$@"
  }
  timed continue_from stage1 train.exp_dir="$exp/stage2" optim.lr=1.5e-3 train.epochs=2
  timed continue_from stage2 train.exp_dir="$exp/stage3" optim.lr=1.5e-3 train.epochs=8 \
    'data.tasks={asr: 2, ast: 0.5, asr_ast: 1}' model.align_weight=1.0 validation.every=200 train.save_every=400
  timed mooer train --config "$exp/stage3/config.yaml" train.exp_dir="$exp/stage3b" train.epochs=16 \
    train.resume="$(ls -d "$exp"/stage3/checkpoints/step-* | tail -n 1)" model.ctc_weight=1.0
  # (e), (f): two 4-epoch continuations with data augmentation — the model had learnt its training
  # sentences (CTC greedy CER 1.8 % on training utterances, 17.2 % on dev:
  # benchmarks/ctc_generalisation.py): speed perturbation 0.9/1.0/1.1
  # (new renderings of every sentence) and SpecAugment; (f) the same at half the learning rate.
  augment='data.augment={speed_perturb: [0.9, 1.0, 1.1], time_masks: 2, time_mask_width: 5, freq_masks: 2, freq_mask_width: 10}'
  timed mooer train --config "$exp/stage3b/config.yaml" train.exp_dir="$exp/stage3c" train.resume=null \
    model.init_from="$exp/stage3b/export/mooer" train.epochs=4 optim.lr=1.0e-3 optim.warmup_steps=50 \
    validation.every=500 train.save_every=500 "$augment"
  timed mooer train --config "$exp/stage3c/config.yaml" train.exp_dir="$exp/stage3d" \
    model.init_from="$exp/stage3c/export/mooer" train.epochs=4 optim.lr=5.0e-4
  # (g), (h): all $renderings renderings of every training sentence (new voices, speeds and pitches), same
  # augmentation, torchrun DDP over $nproc processes (one core each; batches per step x $nproc): 2 epochs
  # at 1e-3, then 1 epoch at 5e-4.
  ddp_train() { env OMP_NUM_THREADS=1 torchrun --nproc_per_node "$nproc" -m mooer.cli train "$@" engine.type=ddp; }
  timed ddp_train --config "$exp/stage3d/config.yaml" train.exp_dir="$exp/stage3e" data.train="$data/train.jsonl" \
    model.init_from="$exp/stage3d/export/mooer" train.epochs=2 optim.lr=1.0e-3
  timed ddp_train --config "$exp/stage3e/config.yaml" train.exp_dir="$exp/stage3f" \
    model.init_from="$exp/stage3e/export/mooer" train.epochs=1 optim.lr=5.0e-4
  # (i), (j): new sentences — the --extra pairs (40,000 from Debian's other catalogues, one rendering each)
  # with the first two renderings of the training sentences (train_more.jsonl), ast weighted 1: 1 epoch at
  # 1e-3, then 1 epoch at 5e-4.
  timed ddp_train --config "$exp/stage3f/config.yaml" train.exp_dir="$exp/stage3g" \
    data.train="$data/train_more.jsonl" model.init_from="$exp/stage3f/export/mooer" train.epochs=1 \
    optim.lr=1.0e-3 'data.tasks={asr: 2, ast: 1, asr_ast: 1}'
  timed ddp_train --config "$exp/stage3g/config.yaml" train.exp_dir="$exp/stage3h" \
    model.init_from="$exp/stage3g/export/mooer" train.epochs=1 optim.lr=5.0e-4
  # (k): 40,000 further pairs (the second --extra list) with everything (i) and (j) saw (train_more2.jsonl):
  # 1 epoch at 5e-4.
  timed ddp_train --config "$exp/stage3h/config.yaml" train.exp_dir="$exp/stage3i" \
    data.train="$data/train_more2.jsonl" model.init_from="$exp/stage3h/export/mooer" train.epochs=1 optim.lr=5.0e-4
  # (l): a third list of 40,000 pairs with everything (k) saw (train_more3.jsonl): 3,000 steps at 5e-4, about
  # three quarters of an epoch.
  timed ddp_train --config "$exp/stage3i/config.yaml" train.exp_dir="$exp/stage3k" \
    data.train="$data/train_more3.jsonl" model.init_from="$exp/stage3i/export/mooer" train.epochs=1 \
    train.max_steps=3000 optim.lr=5.0e-4
fi

model=$exp/stage3k/export/mooer

if run_stage 4; then
  # Held-out scoring. zh: CER (asr, asr_ast transcript), BLEU (ast, asr_ast translation); en: WER (asr).
  for split in test; do
    dir=$exp/decode/$split
    mkdir -p "$dir"
    log 4 "decode $split"
    mooer transcribe --model "$model" --scp "$data/${split}_zh/wav.scp" --task asr --format jsonl --output "$dir/zh_asr.jsonl"
    mooer transcribe --model "$model" --scp "$data/${split}_zh/wav.scp" --task ast --format jsonl --output "$dir/zh_ast.jsonl"
    mooer transcribe --model "$model" --scp "$data/${split}_zh/wav.scp" --task asr_ast --format jsonl --output "$dir/zh_asr_ast.jsonl"
    mooer transcribe --model "$model" --scp "$data/${split}_en/wav.scp" --task asr --format jsonl --output "$dir/en_asr.jsonl"
    # the same without the CTC head (LLM only), for comparison with joint CTC/attention decoding (the default)
    mooer transcribe --model "$model" --scp "$data/${split}_zh/wav.scp" --task asr --ctc-weight 0 --format jsonl --output "$dir/zh_asr_llm.jsonl"
    mooer transcribe --model "$model" --scp "$data/${split}_en/wav.scp" --task asr --ctc-weight 0 --format jsonl --output "$dir/en_asr_llm.jsonl"
    mooer eval --ref "$data/${split}_zh/text" --hyp "$dir/zh_asr.jsonl" --metric cer --json "$dir/zh_asr.cer.json"
    mooer eval --ref "$data/${split}_zh/text.en" --hyp "$dir/zh_ast.jsonl" --task ast --metric bleu --json "$dir/zh_ast.bleu.json"
    mooer eval --ref "$data/${split}_zh/text" --hyp "$dir/zh_asr_ast.jsonl" --task asr --metric cer --json "$dir/zh_asr_ast.cer.json"
    mooer eval --ref "$data/${split}_zh/text.en" --hyp "$dir/zh_asr_ast.jsonl" --task ast --metric bleu --json "$dir/zh_asr_ast.bleu.json"
    mooer eval --ref "$data/${split}_en/text" --hyp "$dir/en_asr.jsonl" --metric wer --normalize --json "$dir/en_asr.wer.json"
    mooer eval --ref "$data/${split}_zh/text" --hyp "$dir/zh_asr_llm.jsonl" --metric cer --json "$dir/zh_asr_llm.cer.json"
    mooer eval --ref "$data/${split}_en/text" --hyp "$dir/en_asr_llm.jsonl" --metric wer --normalize --json "$dir/en_asr_llm.wer.json"
  done
fi

if run_stage 5; then
  log 5 "export -> src/mooer/assets/default-model"
  rm -rf src/mooer/assets/default-model.new
  mooer convert "$model" src/mooer/assets/default-model.new --dtype bfloat16   # 16 MB instead of 32
  # provenance without this machine's absolute paths (the export records where it was trained)
  $python - src/mooer/assets/default-model.new/config.json <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path, encoding="utf-8"))
config["source"] = {"recipe": "recipes/synthetic/run.sh stage 3: conf/demo.yaml from scratch, then eleven "
                              "continuations, the last ten with guided attention, the last eight with "
                              "data augmentation, two on five renderings of every sentence, the last four "
                              "adding 40,000 sentence pairs from other Debian catalogues, the last two "
                              "40,000 more, the last one a third 40,000",
                    "trained": {"encoder": "scratch", "adapter": "new", "llm": "scratch"}}
open(path, "w", encoding="utf-8").write(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
PY
  rm -rf src/mooer/assets/default-model
  mv src/mooer/assets/default-model.new src/mooer/assets/default-model
fi

if run_stage 6; then
  # Hotwords: 160 held-out sentences around rare terms (hotword_sentences.tsv), each decoded with the list of
  # all 240 terms (its own and 239 it does not speak) and without it; scored against the baseline.
  hw=$data/hotwords
  log 6 "hotword set -> $hw"
  timed nice -n 10 $python "$recipe_dir/make_hotword_set.py" --out "$hw" --jobs "$jobs"
  installed=src/mooer/assets/default-model
  for split in dev test; do
    for lang in zh en; do
      dir=$exp/decode/hotwords_$split
      mkdir -p "$dir"
      metric=(--metric cer); [[ $lang == en ]] && metric=(--metric wer --normalize)
      mooer transcribe --model "$installed" --scp "$hw/${split}_$lang/wav.scp" --task asr --format jsonl \
        --output "$dir/${lang}_plain.jsonl"
      mooer transcribe --model "$installed" --scp "$hw/${split}_$lang/wav.scp" --task asr --format jsonl \
        --hotwords-file "$hw/phrases.txt" --output "$dir/${lang}_hotwords.jsonl"
      mooer eval --ref "$hw/${split}_$lang/text" --hyp "$dir/${lang}_hotwords.jsonl" "${metric[@]}" \
        --hotwords "$hw/phrases.txt" --hotword-baseline "$dir/${lang}_plain.jsonl" --json "$dir/${lang}_hotwords.json"
    done
  done
fi
