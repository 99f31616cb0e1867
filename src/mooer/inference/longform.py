"""Long recordings: VAD segments decoded in length-sorted batches, stitched in time order, with guards.

MooER was trained on utterances of at most 20 s and degrades beyond 30 s. An input longer than
``VadOptions.max_segment_s`` is therefore cut by :func:`mooer.inference.vad.segment_speech` (streaming: a 2-hour file
is never held as one array nor as one feature matrix), each segment is decoded like a short input, and the
texts are joined in time order. ``Result.segments`` keeps ``{start, end, text}`` per segment (seconds).

Segments get a generation budget derived from their length (:func:`mooer.inference.guards.max_new_tokens_for`), so an
output that never ends is cut early, and a long multitask segment is not truncated by a fixed 200. A
degenerate output (n-gram loop, high compression ratio, length out of proportion to the audio) is decoded
once more with a stricter setting (:func:`mooer.inference.guards.stricter_decoding`); if it still loops, the looping
tail is cut. Each decision is recorded in ``Result.notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from mooer.decoding import DecodingOptions, Result
from mooer.errors import AudioError
from mooer.inference.guards import RepetitionGuard, check_output, max_new_tokens_for, stricter_decoding, truncate_repetition
from mooer.inference.pipeline import Pipeline, longest_first
from mooer.inference.vad import Segment, VadOptions, iter_segment_audio, segment_speech
from mooer.tasks import join_multitask, split_multitask


@dataclass
class LongFormOptions:
    """When and how long inputs are segmented.

    ``enabled``: ``None`` = automatically for inputs longer than ``vad.max_segment_s``; ``True`` = always
    segment; ``False`` = never (decode the whole input at once, as the official code does).
    ``guard``: the repetition/hallucination guard on segment outputs (None = the defaults).
    ``window``: how many segments are featurised at a time (bounds memory); sorted by length inside it.
    ``speech_gate``: short inputs pass the VAD too, and one with no speech at all gets an empty text instead
    of being decoded (an LLM asked to transcribe silence or noise writes something: 5 s of silence gave
    "萨尔维尔", white noise a loop). Long inputs always pass it (their segments come from the VAD). Needs
    the ``vad`` extra; without it short inputs are decoded as they are.
    """

    enabled: bool | None = None
    vad: VadOptions = field(default_factory=VadOptions)
    guard: RepetitionGuard | None = field(default_factory=RepetitionGuard)
    window: int = 64
    speech_gate: bool = True

    def no_speech(self, wave: Any) -> bool:
        """Whether the gate is on and finds no speech in ``wave`` (16 kHz mono)."""
        if not self.speech_gate or not _vad_available():
            return False
        return not segment_speech(wave, self.vad)

    def applies(self, seconds: float) -> bool:
        if self.enabled is None:
            return seconds > self.vad.max_segment_s
        return self.enabled


NO_SPEECH = "no speech detected"


def _vad_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("silero_vad") is not None


def join_texts(parts: list[str]) -> str:
    """Join segment texts: a space between two Latin/digit ends, nothing between CJK text."""
    out = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if out and (out[-1].isascii() and out[-1].isalnum() or part[0].isascii() and part[0].isalnum()
                    or out[-1] in ".,;:!?"):
            out += " "
        out += part
    return out


@dataclass
class _Piece:
    segment: Segment
    features: Any
    ids: list[int] = field(default_factory=list)
    text: str = ""
    notes: list[str] = field(default_factory=list)


def _windows(pipeline: Pipeline, source: Any, segments: list[Segment], size: int) -> Iterator[list[_Piece]]:
    window: list[_Piece] = []
    for seg, wave in iter_segment_audio(source, segments):
        try:
            feats = pipeline.featurize_waveform(wave)
        except AudioError:  # a sliver too short for one audio token: nothing to decode
            continue
        window.append(_Piece(seg, feats))
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


#: ``decode(features_list, task, options, max_new_tokens) -> ids per row``: one model call. The default is
#: ``Pipeline.generate``; the server passes one that queues the segments on its micro-batcher.
Decode = Callable[[Sequence[Any], str, DecodingOptions, int], list[list[int]]]


def _guarded(pipeline: Pipeline, decode: Decode, piece: _Piece, task: str, options: DecodingOptions,
             guard: RepetitionGuard | None, budget: int) -> None:
    """Check one decoded piece; retry stricter, then cut a looping tail, noting what was done."""
    if guard is None:
        return
    content = [t for t in piece.ids if t != pipeline.eos_id]
    verdict = check_output(piece.text, content, piece.segment.duration, guard)
    if verdict.ok:
        return
    where = f"{piece.segment.start:.2f}-{piece.segment.end:.2f}s"
    piece.notes.append(f"guard at {where}: {'; '.join(verdict.reasons)}; retried with stricter decoding")
    strict = stricter_decoding(options)
    ids = decode([piece.features], task, strict, budget)[0]
    text = pipeline.text_of(ids)
    again = check_output(text, [t for t in ids if t != pipeline.eos_id], piece.segment.duration, guard)
    piece.ids, piece.text = ids, text
    if not again.ok:
        piece.text = truncate_repetition(text, guard)
        piece.notes.append(f"guard at {where}: still degenerate after the retry ({'; '.join(again.reasons)}); "
                           f"looping tail cut")


def transcribe_long(pipeline: Pipeline, source: Any, *, key: str, name: str, duration: float, task: str,
                    options: DecodingOptions, batch_size: int, long_form: LongFormOptions,
                    decode: Decode | None = None) -> Result:
    """Segment ``source`` with the VAD, decode the segments, and stitch one :class:`Result`."""
    if decode is None:
        def decode(features, task_, opts, budget):
            return [g.ids for g in pipeline.generate(features, task_, opts, max_new_tokens=budget)]
    segments = segment_speech(source, long_form.vad)
    pieces: list[_Piece] = []
    for window in _windows(pipeline, source, segments, long_form.window):
        for batch in longest_first(window, batch_size, lambda p: p.features.shape[0]):
            budget = max(max_new_tokens_for(p.segment.duration, long_form.guard) for p in batch)
            rows = decode([p.features for p in batch], task, options, budget)
            for piece, ids in zip(batch, rows):
                piece.ids, piece.text = ids, pipeline.text_of(ids)
                _guarded(pipeline, decode, piece, task, options, long_form.guard, budget)
            for piece in batch:
                piece.features = None  # free memory as soon as a piece is decoded
        pieces.extend(window)
    pieces.sort(key=lambda p: p.segment.start)

    result = Result(key=key, audio=name, task=task, duration=round(duration, 3), segments=[])
    transcripts, translations, texts = [], [], []
    for p in pieces:
        entry = {"start": round(p.segment.start, 3), "end": round(p.segment.end, 3), "text": p.text}
        if task == "asr_ast":
            entry["asr"], entry["ast"] = split_multitask(p.text)
            transcripts.append(entry["asr"])
            translations.append(entry["ast"])
        texts.append(p.text)
        result.segments.append(entry)
        result.token_ids.extend(p.ids)
        result.notes.extend(p.notes)
    if task == "asr_ast":
        result.asr, result.ast = join_texts(transcripts), join_texts(translations)
        result.text = join_multitask(result.asr, result.ast)
    else:
        result.text = join_texts(texts)
    result.notes.insert(0, f"long input ({duration:.1f} s): {len(pieces)} VAD segments")
    return result
