"""Reading references and hypotheses for evaluation.

Accepted inputs (the format is chosen by file suffix: ``.jsonl``, ``.json`` and ``.ndjson`` are JSON lines,
anything else is a key-text file):

- **Kaldi-style key-text files** (``text`` files, ``testing.py`` output; :func:`mooer.output.formats.read_key_text`):
  one ``key<space or tab>text`` per line, split once; the text may be empty (a key alone is an empty
  hypothesis, scored as all deletions). Blank lines are skipped, a UTF-8 BOM is ignored, duplicate keys keep
  the last line.
- **tsv output of** ``mooer transcribe`` (suffix ``.tsv``): a key-text file whose texts are escaped; the
  escapes ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` are undone (:func:`mooer.output.formats.unescape`).
- **jsonl output of** ``mooer transcribe``: records with ``key`` and ``text``; multitask records also carry
  ``asr`` and ``ast``. A record with a non-empty ``error`` field is a failed transcription: it becomes a
  *failed* key (counted, and treated as a missing hypothesis).
- **native manifests** (jsonl): ``{"id": ..., "audio": ..., "text": transcript, "translation": optional
  English translation, ...}``; the reference field depends on the task (:data:`REFERENCE_FIELDS`).

Tasks: ``asr`` scores transcripts, ``ast`` translations. A hypothesis text of the multitask model is
``ASR_TEXT\\nAST_TEXT`` (docs/design.md §4). When a hypothesis has no dedicated ``asr``/``ast`` field and its text
contains a newline, it is split at the first newline and the part for the task is used, stripped (the
rule of ``mooer.prompting.split_multitask``, which fills the ``asr``/``ast`` fields of the jsonl); a text
without a newline is used whole for either task (single-task model output).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from mooer.evaluation.pairing import EvaluationError
from mooer.output.formats import read_key_text
from mooer.tasks import MULTITASK_SEPARATOR, split_multitask

Task = Literal["asr", "ast"]
#: What a hypothesis is scored as: a transcript (CER/WER) or a translation (BLEU); an asr_ast output is
#: split into both. (The tasks a model decodes are :data:`mooer.tasks.TASKS`.)
SCORED_TASKS: tuple[str, ...] = get_args(Task)

#: manifest field holding the reference of each task
REFERENCE_FIELDS: dict[str, str] = {"asr": "text", "ast": "translation"}

JSONL_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})


@dataclass(frozen=True)
class Hypotheses:
    """Hypothesis texts by key, and the keys whose transcription failed (key -> error message)."""

    texts: dict[str, str]
    failed: dict[str, str] = field(default_factory=dict)


def check_task(task: str) -> Task:
    """Return ``task`` if it is ``asr`` or ``ast``, else raise ValueError."""
    if task not in SCORED_TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {SCORED_TASKS}")
    return task  # type: ignore[return-value]


def reference_field(task: Task) -> str:
    """The manifest field holding the reference for ``task``: ``text`` (asr) or ``translation`` (ast)."""
    return REFERENCE_FIELDS[check_task(task)]


def is_jsonl(path: str | Path) -> bool:
    """Whether ``path`` is read as JSON lines (by suffix)."""
    return Path(path).suffix.lower() in JSONL_SUFFIXES


def task_text(text: str, task: Task) -> str:
    """The part of a hypothesis text that ``task`` scores (see the module docstring)."""
    if MULTITASK_SEPARATOR not in text:
        return text
    return split_multitask(text)[SCORED_TASKS.index(check_task(task))]


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for every non-blank line of a JSON-lines file."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise EvaluationError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def _record_key(record: dict, fields: tuple[str, ...], where: str) -> str:
    for name in fields:
        value = record.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    raise EvaluationError(f"{where}: no utterance key (expected field {' or '.join(repr(f) for f in fields)})")


def _record_text(record: dict, name: str, where: str) -> str:
    value = record.get(name)
    if not isinstance(value, str):
        state = "missing" if value is None else f"not a string ({type(value).__name__})"
        raise EvaluationError(f"{where}: field {name!r} is {state}")
    return value


def read_references(path: str | Path, task: Task = "asr") -> dict[str, str]:
    """References by key from a key-text file or a manifest (field per :func:`reference_field`)."""
    if not is_jsonl(path):
        return read_key_text(path, escaped=Path(path).suffix.lower() == ".tsv")
    name = reference_field(task)
    refs: dict[str, str] = {}
    for lineno, record in iter_jsonl(path):
        where = f"{path}:{lineno}"
        key = _record_key(record, ("id", "key"), where)
        refs[key] = _record_text(record, name, f"{where} (id {key})")
    return refs


def read_hypotheses(path: str | Path, task: Task = "asr") -> Hypotheses:
    """Hypotheses by key from a key-text file, a ``.tsv`` or the jsonl of ``mooer transcribe``."""
    check_task(task)
    if not is_jsonl(path):
        raw = read_key_text(path, escaped=Path(path).suffix.lower() == ".tsv")
        return Hypotheses({key: task_text(text, task) for key, text in raw.items()})
    texts: dict[str, str] = {}
    failed: dict[str, str] = {}
    for lineno, record in iter_jsonl(path):
        where = f"{path}:{lineno}"
        key = _record_key(record, ("key", "id"), where)
        error = record.get("error")
        if error:
            failed[key] = str(error)
            texts.pop(key, None)
            continue
        failed.pop(key, None)
        where = f"{where} (key {key})"
        if isinstance(record.get(task), str):
            texts[key] = record[task]
        else:
            texts[key] = task_text(_record_text(record, "text", where), task)
    return Hypotheses(texts, failed)
