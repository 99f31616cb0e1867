"""The tasks a MooER model performs and the multitask output convention (torch-free).

``asr`` writes the transcript, ``ast`` the English translation, ``asr_ast`` both, as
``transcript + "\\n" + translation`` (the released multitask model's format).
"""

from __future__ import annotations

TASKS = ("asr", "ast", "asr_ast")
MULTITASK_SEPARATOR = "\n"


def split_multitask(text: str, separator: str = MULTITASK_SEPARATOR) -> tuple[str, str]:
    """Split a multitask output at the first separator into (transcript, translation), both stripped.

    Without a separator the whole text is the transcript and the translation is empty.
    """
    if separator in text:
        asr, ast = text.split(separator, 1)
        return asr.strip(), ast.strip()
    return text.strip(), ""


def join_multitask(transcript: str, translation: str, separator: str = MULTITASK_SEPARATOR) -> str:
    """The training target of the asr_ast task: transcript, separator, translation."""
    return f"{transcript}{separator}{translation}"
