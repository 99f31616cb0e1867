"""Teachers and the labelling of one block of utterances.

Two steps, so that a cluster can run them on different workers (:mod:`mooer.labelling.jobs`):

1. :func:`featurise` (CPU): read the audio, compute the fbank + LFR features. They are the same for every
   MooER model; each teacher applies its own CMVN.
2. :class:`Labeller` (the model holder): decode with every teacher and gather the evidence of
   :mod:`mooer.labelling.evidence` into one record per utterance.

A record (one JSON line of the labelling output)::

    {"key": "u1", "audio": "/data/u1.wav", "duration": 2.41, "lang": "zh",
     "text": "打开文件", "translation": "Open the file",            # the label (see below)
     "teachers": [{"name": "t0", "task": "asr", "text": "打开文件", "mean_logprob": -0.08, "min_logprob": -0.9,
                   "guard_ok": true, "guard_reasons": [], "compression_ratio": 0.9,
                   "rate": 3.3, "rate_unit": "char", "ctc_text": "打开文件", "ctc_cer": 0.0}, ...],
     "teacher_cer": 0.0, "teacher_translation_cer": 12.5}

``text`` is the transcript of the first teacher that writes one (task ``asr`` or ``asr_ast``) and
``translation`` the translation of the first that writes one (``ast`` or ``asr_ast``). ``teacher_cer`` is the
largest :func:`~mooer.labelling.evidence.disagreement` of another teacher's transcript with the label, and
``teacher_translation_cer`` the same for translations (present with two or more such teachers). ``ctc_*``
appear for models with a CTC head. An utterance that could not be read has ``error`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


from mooer.errors import ConfigError, MooerError
from mooer.labelling.evidence import disagreement, logprob_stats, speech_rate, text_lang
from mooer.labelling.inputs import Item

__all__ = ["TeacherSpec", "Teacher", "Labeller", "check_specs", "featurise"]

TRANSCRIBING = ("asr", "asr_ast")
TRANSLATING = ("ast", "asr_ast")


def featurise(item: Item) -> dict:
    """Read ``item`` and compute its unnormalised features (fbank + LFR, float32); an unreadable input gives a
    row with ``error``."""
    from mooer.audio import SAMPLE_RATE
    from mooer.features import apply_lfr, kaldi_fbank

    row: dict[str, Any] = {"item": item.to_json(), "lfr": None, "duration": None, "error": None}
    try:
        wave = item.load_audio()
        row["duration"] = round(len(wave) / SAMPLE_RATE, 3)
        row["lfr"] = apply_lfr(kaldi_fbank(wave)).numpy()
    except (MooerError, OSError) as e:
        row["error"] = str(e)
    return row


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher: a model (None = the bundled demo model), a task (None = the model's default) and decoding
    (a preset, optionally with the CTC weight or the beams changed).

    Written on the command line as ``key=value`` pairs separated by commas, or as a bare model path::

        default                                   the bundled model, its default task, preset official
        model=/models/mooer,task=asr_ast,name=big
        model=default,preset=greedy,ctc_weight=0  the bundled model, LLM only, greedy
    """

    name: str
    model: Optional[str] = None
    task: Optional[str] = None
    preset: str = "official"
    ctc_weight: Optional[float] = None
    beams: Optional[int] = None

    @classmethod
    def parse(cls, text: str, index: int = 0) -> "TeacherSpec":
        if "=" not in text:
            text = f"model={text}"
        fields: dict[str, Any] = {"name": f"t{index}"}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key not in ("name", "model", "task", "preset", "ctc_weight", "beams"):
                raise ConfigError(f"teacher {text!r}: expected key=value with key name, model, task, preset, "
                                  f"ctc_weight or beams; got {part!r}")
            fields[key] = value
        if fields.get("model") in (None, "", "default"):
            fields["model"] = None
        try:
            if "ctc_weight" in fields:
                fields["ctc_weight"] = float(fields["ctc_weight"])
            if "beams" in fields:
                fields["beams"] = int(fields["beams"])
        except ValueError as e:
            raise ConfigError(f"teacher {text!r}: {e}") from None
        if fields.get("task") not in (None, "asr", "ast", "asr_ast"):
            raise ConfigError(f"teacher {text!r}: task must be asr, ast or asr_ast")
        return cls(**fields)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Teacher:
    """A loaded teacher (see :class:`TeacherSpec`)."""

    spec: TeacherSpec
    device: Optional[str] = None
    batch_size: int = 16
    model: Any = field(init=False)

    def __post_init__(self) -> None:
        from mooer.api import MooER
        from mooer.decoding import get_preset
        from mooer.features import LFR_M, LFR_N

        self.model = MooER.from_pretrained(self.spec.model, device=self.device)
        self.task = self.spec.task or self.model.default_task
        self.options = get_preset(self.spec.preset).replace(ctc_weight=self.spec.ctc_weight,
                                                            num_beams=self.spec.beams)
        self.model.pipeline.check(self.task, self.options)
        features = self.model.features
        if (features.lfr_m, features.lfr_n) != (LFR_M, LFR_N):  # featurise() computes the standard LFR
            raise ConfigError(f"teacher {self.spec.name}: LFR {features.lfr_m}/{features.lfr_n} is not MooER's "
                              f"{LFR_M}/{LFR_N}")

    def label(self, rows: Sequence[dict]) -> list[dict]:
        """Per row of :func:`featurise` (without ``error``), this teacher's output and evidence."""
        import torch

        from mooer.features import audio_tokens
        from mooer.inference.ctc_prefix import ctc_best_path
        from mooer.inference.guards import check_output, max_new_tokens_for
        from mooer.inference.pipeline import longest_first

        pipeline = self.model.pipeline
        out: dict[int, dict] = {}
        usable = []
        for i, row in enumerate(rows):
            frames = row["lfr"].shape[0]
            if audio_tokens(frames, pipeline.downsample) == 0:
                out[i] = {"error": f"audio is {row['duration']} s long, too short for one audio token"}
            else:
                usable.append((i, self.model.features.cmvn.apply(torch.from_numpy(row["lfr"]))))
        net = pipeline.network
        for batch in longest_first(usable, self.batch_size, lambda e: e[1].shape[0]):
            seconds = [rows[i]["duration"] for i, _ in batch]
            ctc: list[list[int]] = []

            def read_ctc(states, lengths) -> None:
                if net.ctc_head is not None:
                    ctc.extend(ctc_best_path(net.ctc_log_probs(states), lengths))

            budget = min(self.options.max_new_tokens, max_new_tokens_for(max(seconds)))
            generations = pipeline.generate([f for _, f in batch], self.task, self.options,
                                            max_new_tokens=budget, on_encoded=read_ctc)
            for n, ((i, _), gen) in enumerate(zip(batch, generations)):
                row = rows[i]
                result = pipeline.result(row["item"]["key"], row["item"]["audio"], self.task, gen, row["duration"])
                transcript = result.asr if self.task == "asr_ast" else (result.text if self.task == "asr" else None)
                translation = result.ast if self.task == "asr_ast" else (result.text if self.task == "ast" else None)
                verdict = check_output(result.text, result.token_ids, row["duration"])
                mean, low = logprob_stats(result.token_logprobs)
                rec: dict[str, Any] = {"name": self.spec.name, "task": self.task}
                if transcript is not None:
                    rec["text"] = transcript
                if translation is not None:
                    rec["translation"] = translation
                rec.update(mean_logprob=mean, min_logprob=low, guard_ok=verdict.ok, guard_reasons=verdict.reasons,
                           compression_ratio=verdict.metrics["compression_ratio"])
                if transcript is not None:
                    rec["rate"], rec["rate_unit"] = speech_rate(transcript, row["duration"], row["item"].get("lang"))
                    if ctc:
                        rec["ctc_text"] = pipeline.text_of(ctc[n])
                        rec["ctc_cer"] = disagreement(transcript, rec["ctc_text"])
                out[i] = rec
        return [out[i] for i in range(len(rows))]


def check_specs(specs: Sequence[TeacherSpec]) -> None:
    """What can be checked before any model is loaded (a Ray job checks it before starting workers)."""
    if not specs:
        raise ConfigError("no teacher given")
    if len({s.name for s in specs}) != len(specs):
        raise ConfigError(f"teacher names must differ: {[s.name for s in specs]}")
    if all(s.task is not None for s in specs) and not any(s.task in TRANSCRIBING for s in specs):
        raise ConfigError("at least one teacher must write a transcript (task asr or asr_ast): a training "
                          "manifest needs a text")


class Labeller:
    """Every teacher, loaded once; :meth:`label` turns featurised rows into records (module docstring)."""

    def __init__(self, specs: Sequence[TeacherSpec], device: Optional[str] = None, batch_size: int = 16,
                 threads: Optional[int] = None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        check_specs(specs)
        self.teachers = [Teacher(s, device, batch_size) for s in specs]
        if not any(t.task in TRANSCRIBING for t in self.teachers):  # default tasks known only now
            raise ConfigError("at least one teacher must write a transcript (task asr or asr_ast): a training "
                              "manifest needs a text")

    def label(self, rows: Sequence[dict]) -> list[dict]:
        ok = [r for r in rows if r["error"] is None]
        outputs = [t.label(ok) for t in self.teachers]
        per_row = iter(zip(*outputs)) if ok else iter(())
        records = []
        for row in rows:
            record: dict[str, Any] = dict(row["item"])
            if row["duration"] is not None:
                record["duration"] = row["duration"]
            if row["error"] is not None:
                record["error"] = row["error"]
                records.append(record)
                continue
            teachers = list(next(per_row))
            failed = [t["error"] for t in teachers if "error" in t]
            if failed:
                record["error"] = failed[0]
                records.append(record)
                continue
            transcripts = [t["text"] for t in teachers if "text" in t]
            translations = [t["translation"] for t in teachers if "translation" in t]
            record["text"] = transcripts[0]
            record.setdefault("lang", text_lang(transcripts[0]))
            if translations:
                record["translation"] = translations[0]
            record["teachers"] = teachers
            if len(transcripts) > 1:
                record["teacher_cer"] = max(disagreement(transcripts[0], t) for t in transcripts[1:])
            if len(translations) > 1:
                record["teacher_translation_cer"] = max(disagreement(translations[0], t) for t in translations[1:])
            records.append(record)
        return records
