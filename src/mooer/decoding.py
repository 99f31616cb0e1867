"""Decoding options (named presets), and the structured result of one input."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


#: bonus per token of a listed hotword (:mod:`mooer.inference.hotwords`) where every phrase is boosted everywhere
#: (models without a CTC head, e.g. the official checkpoints; translations); tuned on the demo model's hotword
#: dev set without the pre-filter, see benchmarks/RESULTS_hotwords.md
DEFAULT_HOTWORD_WEIGHT = 3.0
#: the same where the CTC pre-filter runs (transcripts of models with a CTC head): each utterance boosts only the
#: few phrases its CTC posteriors support, so a phrase can get more (tuned with the threshold on the same dev set)
DEFAULT_FILTERED_HOTWORD_WEIGHT = 4.0
#: CTC pre-filter of hotwords: the keyword score per token a phrase needs in an utterance to be boosted there
#: (:func:`mooer.inference.hotwords.ctc_keyword_scores`)
DEFAULT_HOTWORD_THRESHOLD = -4.0


@dataclass(frozen=True)
class DecodingOptions:
    """How the LLM writes its answer. Every field is explicit: nothing is inherited from the LLM
    directory's ``generation_config.json`` (the stock Qwen sampling defaults would change results)."""

    num_beams: int = 4
    max_new_tokens: int = 200
    length_penalty: float = 0.8
    eos_bias: float = -0.2  # added to the <|im_end|> log-probability at every step (0 = none)
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    #: joint CTC/attention decoding (:mod:`mooer.inference.ctc_prefix`): weight of the CTC prefix score of the
    #: encoder's CTC head in the transcript (``asr``, transcript part of ``asr_ast``; ``ast`` is LLM-only).
    #: None = :data:`DEFAULT_CTC_WEIGHT` for models that carry a CTC head, 0 (LLM only) for the others —
    #: the official checkpoints have none, so their decoding is unchanged.
    ctc_weight: float | None = None
    #: joint decoding: how many of the LLM's most likely next tokens the CTC head scores at each step (the
    #: others are dropped); a weak LLM often ranks the right token low, so many more than the beams
    ctc_candidates: int = 256
    #: hotwords (:mod:`mooer.inference.hotwords`): phrases to favour (names, terms). Entries are phrases or
    #: ``(phrase, weight)`` pairs; a list or a comma/newline-separated string is turned into the validated,
    #: hashable tuple (``ValueError`` past the limits: empty or over-long phrases, more than 1,000, bad
    #: weights). () = none: no logits processor is added, decoding is unchanged.
    hotwords: tuple = ()
    #: the bonus per token of a listed phrase (natural-log units) for phrases without their own weight;
    #: taken back when the phrase is not finished. None = :data:`DEFAULT_FILTERED_HOTWORD_WEIGHT` where the CTC
    #: pre-filter runs (``hotword_threshold``), :data:`DEFAULT_HOTWORD_WEIGHT` elsewhere
    hotword_weight: float | None = None
    #: models with a CTC head (the transcript of ``asr``): a phrase is boosted in an utterance only where the
    #: CTC posteriors support it, i.e. its CTC keyword score (per token, log-probability relative to each
    #: frame's best class; 0 = the CTC head's own best path writes it) reaches this threshold. -inf = boost
    #: every phrase everywhere, as models without a CTC head (the official checkpoints) and the other tasks do
    hotword_threshold: float = DEFAULT_HOTWORD_THRESHOLD

    def __post_init__(self) -> None:
        # imported here: the hotword module needs torch, and importing mooer must stay light
        from mooer.inference.hotwords import check_weight, normalize_hotwords

        if self.num_beams < 1:
            raise ValueError("num_beams must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.ctc_candidates < 1:
            raise ValueError("ctc_candidates must be >= 1")
        if self.ctc_weight is not None and not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if not isinstance(self.hotwords, tuple) or self.hotwords:  # a list or a string: normalise it
            object.__setattr__(self, "hotwords", normalize_hotwords(self.hotwords))
        if self.hotword_weight is not None:
            object.__setattr__(self, "hotword_weight", check_weight(self.hotword_weight, "hotword_weight"))
        threshold = self.hotword_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold <= 0.0:
            raise ValueError(f"hotword_threshold must be a number <= 0 (-inf: no CTC pre-filter), got {threshold!r}")
        object.__setattr__(self, "hotword_threshold", float(threshold))

    def replace(self, **changes: Any) -> "DecodingOptions":
        """A copy with some fields changed; ``None`` values are ignored (handy for CLI overrides)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


#: CTC weight of joint decoding for models with a CTC head (tuned on the bundled demo model's dev split: 0.7
#: with its stage-3 weights; 0.5 once its LLM had learnt to read the audio, see benchmarks/RESULTS_demo.md).
DEFAULT_CTC_WEIGHT = 0.5

#: ``official``: what the official offline inference uses (beam 4, 200 new tokens, length penalty 0.8,
#: EOS bias -0.2). ``greedy``: the official streaming demo (docs/design.md §5).
PRESETS: dict[str, DecodingOptions] = {
    "official": DecodingOptions(),
    "greedy": DecodingOptions(num_beams=1, max_new_tokens=500, length_penalty=1.0, eos_bias=0.0),
}


def get_preset(name: str | DecodingOptions | None) -> DecodingOptions:
    """Resolve a preset name (or pass an options object through)."""
    if name is None:
        return PRESETS["official"]
    if isinstance(name, DecodingOptions):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown decoding preset {name!r}; choose one of {sorted(PRESETS)}") from None


@dataclass
class Generation:
    """One row's output: new ids (up to and including EOS when it was written) and, per id, the LLM's
    log-probability of it (natural log; as the decoder saw it, i.e. after the preset's EOS bias and before
    joint CTC or hotword scores)."""

    ids: list[int]
    logprobs: list[float] = field(default_factory=list)


@dataclass
class Result:
    """The outcome for one input, in the order the inputs were given."""

    key: str
    audio: str
    task: str
    text: str = ""
    asr: str | None = None  # filled for multitask output (transcript part)
    ast: str | None = None  # filled for multitask output (translation part)
    error: str | None = None
    duration: float | None = None  # seconds of audio
    token_ids: list[int] = field(default_factory=list)  # generated ids up to and including EOS
    token_logprobs: list[float] = field(default_factory=list)  # the LLM's log-probability of each id
    segments: list[dict] | None = None  # long-form: [{start, end, text}, ...]
    notes: list[str] = field(default_factory=list)  # decisions taken (e.g. guard retries)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self, with_tokens: bool = False) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("token_ids", "token_logprobs")}
        if with_tokens:
            out["token_ids"] = list(self.token_ids)
            out["token_logprobs"] = list(self.token_logprobs)
        return {k: v for k, v in out.items() if v is not None and v != []}
