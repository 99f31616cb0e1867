"""Hotwords: decoding-time biasing towards listed phrases (names, product names, terms), with no retraining.

Three parts, used by every front end (``DecodingOptions(hotwords=...)``, ``mooer transcribe --hotwords``,
the server's ``hotwords`` and ``prompt`` fields):

**Phrase lists.** :func:`parse_hotwords` reads comma- or newline-separated text, :func:`read_hotwords_file`
a file with one phrase per line; either may give a phrase its own weight as ``phrase<TAB>weight``.
:func:`normalize_hotwords` validates a list and returns the hashable form that
:class:`~mooer.decoding.DecodingOptions` keeps: a tuple whose entries are a phrase (weighted with
``hotword_weight``) or a ``(phrase, weight)`` pair. Whitespace runs become one space, a repeated phrase
keeps its first entry. Every violation of the documented limits is a :class:`HotwordError` (a ValueError)
naming the phrase: an empty phrase, one longer than :data:`MAX_HOTWORD_CHARS` characters, more than
:data:`MAX_HOTWORDS` phrases, a weight that is not a number in (0, :data:`MAX_HOTWORD_WEIGHT`].

**Context graph.** :class:`ContextGraph` is an Aho-Corasick automaton (a prefix trie with failure links,
as WeNet's and icefall's ``ContextGraph``) over token-id sequences: each phrase as the model's tokenizer
writes it, with and without a leading space and, for phrases with cased letters, as written, lower case,
upper case, Capitalised and Title Case (:func:`spellings`). A hypothesis's state is the deepest trie node
that is a suffix of what it has written. Each token that extends a partial match earns a bonus: a phrase
earns the same in each spelling, its weight times the tokens of its shortest spelling, shared among the
spelling's tokens in proportion to the characters they write (:func:`build_graph`). The score of a
hypothesis is

    (sum of the phrases it completed) + pending(state)

where ``pending`` is what the unfinished match has collected, and the bonus of one step is the change of
that score. So a token that breaks a partial match takes the collected bonus back (the failure links keep
whatever suffix still matches), EOS takes back an unfinished match, and a completed phrase keeps its bonus
(also when it is a prefix of a longer listed phrase, or a suffix of the text matched so far). A token
shared by phrases of different weights earns the largest while the match is open; the token that
completes a phrase brings its sum to that phrase's own total. A phrase that starts (ends) with a Latin
letter or digit matches whole words only (:class:`ContextGraph`).

**Booster.** :class:`HotwordBooster` adds those bonuses to the next-token scores, a logits processor in
the convention of :mod:`mooer.inference.engines` (rows item-major; Hugging Face greedy, beam search and
sampling run it, any engine that calls processors per step can). Each row's state is derived from its
prefix: the state of the prefix without its last token (kept from the previous step, so a step costs
O(rows), not O(rows * length)) advanced by one token. Scores change only where they must: every row gets
``-pending`` (breaking its match), the first tokens of phrases get their bonus in all rows with one
indexed add, and a row inside a match gets the tokens leaving its state (and the states on its failure
chain) in one more.

**CTC pre-filter.** Where the model has a CTC head and the output is the transcript (``asr``),
:class:`HotwordList` first scores each phrase against each utterance's CTC posteriors
(:func:`ctc_keyword_scores`) and the utterance boosts only the phrases that reach
``DecodingOptions.hotword_threshold`` (:class:`FilteredHotwordBooster`): a phrase the audio gives no
evidence for cannot be written by the bonus alone, so a list of many phrases costs speech that says none of
them little, and the kept few can take a larger weight. Models without a CTC head (the official checkpoints)
and translations boost every phrase everywhere.

The official checkpoints' tokenizer is Qwen2's byte-level BPE, whose merges can join a phrase's first
Chinese character with the one before it; such a writing does not match here (the demo model's tokenizer
keeps Chinese characters apart, so it does not arise there).
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

if TYPE_CHECKING:  # torch is imported where tensors are made: validating options (DecodingOptions) needs none
    import torch

__all__ = [
    "MAX_HOTWORDS", "MAX_HOTWORD_CHARS", "MAX_HOTWORD_WEIGHT", "HotwordError", "Hotword", "parse_hotwords",
    "read_hotwords_file", "normalize_hotwords", "check_weight", "hotword_phrases", "spellings",
    "WORD_CHARACTERS", "word_edges", "ContextGraph", "HotwordBooster", "build_graph", "HotwordList",
    "FilteredHotwordBooster", "ctc_keyword_scores",
]

#: most phrases in one list (1,000 phrases cost at most 15 % decoding speed: benchmarks/RESULTS_hotwords.md)
MAX_HOTWORDS = 1000
#: longest phrase, in characters (after whitespace runs become one space)
MAX_HOTWORD_CHARS = 64
#: largest weight: the bonus per token, in natural-log units; more would let a phrase override any audio
MAX_HOTWORD_WEIGHT = 20.0

#: a list entry: a phrase (weighted with ``hotword_weight``) or ``(phrase, weight)``
Hotword = Union[str, tuple[str, float]]

_SEPARATORS = re.compile(r"[,，、\n]")  # commas (ASCII, full-width, ideographic) and newlines


class HotwordError(ValueError):
    """A hotword list breaks a documented limit; the message names the phrase and the limit."""


def _shown(phrase: str) -> str:
    return repr(phrase if len(phrase) <= 40 else phrase[:40] + "…")


def check_weight(weight: Any, what: str = "hotword weight") -> float:
    """``weight`` as a float if it is a finite number in (0, MAX_HOTWORD_WEIGHT], else HotwordError."""
    if isinstance(weight, str):
        try:
            weight = float(weight.strip())
        except ValueError:
            raise HotwordError(f"{what} must be a number, got {weight!r}") from None
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise HotwordError(f"{what} must be a number, got {weight!r}")
    weight = float(weight)
    if not math.isfinite(weight) or not 0.0 < weight <= MAX_HOTWORD_WEIGHT:
        raise HotwordError(f"{what} must be > 0 and <= {MAX_HOTWORD_WEIGHT:g}, got {weight:g}")
    return weight


def _entry(text: str, where: str) -> Hotword:
    """One ``phrase`` or ``phrase<TAB>weight`` entry (validated later by :func:`normalize_hotwords`)."""
    phrase, tab, weight = text.partition("\t")
    if not tab:
        return phrase
    return (phrase, check_weight(weight, f"{where}: the weight of {_shown(phrase.strip())}"))


def parse_hotwords(text: str | None, what: str = "hotwords") -> tuple[Hotword, ...]:
    """Phrases from comma- or newline-separated text (``"张伟, Kubernetes"``); each may end in
    ``<TAB>weight``. Blank text is no phrase; an empty phrase between separators is an error."""
    if text is None or not text.strip():
        return ()
    pieces = _SEPARATORS.split(text.strip())
    return normalize_hotwords([_entry(p, f"{what} entry {i}") for i, p in enumerate(pieces, 1)], what)


def read_hotwords_file(path: str | Any) -> tuple[Hotword, ...]:
    """Phrases from a UTF-8 file: one per line, optionally ``phrase<TAB>weight``; blank lines are skipped."""
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    entries = [_entry(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    return normalize_hotwords(entries, str(path))


def normalize_hotwords(entries: Iterable[Any] | str | None, what: str = "hotwords") -> tuple[Hotword, ...]:
    """A validated, hashable hotword list (see the module docstring); a string is parsed first."""
    if entries is None:
        return ()
    if isinstance(entries, str):
        return parse_hotwords(entries, what)
    out: dict[str, Hotword] = {}
    for i, entry in enumerate(entries, 1):
        weight = None
        if isinstance(entry, (tuple, list)):
            if len(entry) != 2:
                raise HotwordError(f"{what} entry {i}: expected a phrase or a (phrase, weight) pair, got {entry!r}")
            entry, weight = entry
            weight = check_weight(weight, f"{what} entry {i}: the weight of {_shown(str(entry))}")
        if not isinstance(entry, str):
            raise HotwordError(f"{what} entry {i}: a phrase must be a string, got {type(entry).__name__}")
        phrase = " ".join(entry.split())
        if not phrase:
            raise HotwordError(f"{what} entry {i} is an empty phrase")
        if len(phrase) > MAX_HOTWORD_CHARS:
            raise HotwordError(f"{what} entry {i} {_shown(phrase)} is {len(phrase)} characters long; a phrase "
                               f"may have at most {MAX_HOTWORD_CHARS}")
        out.setdefault(phrase, phrase if weight is None else (phrase, weight))
        if len(out) > MAX_HOTWORDS:
            raise HotwordError(f"{what}: more than {MAX_HOTWORDS} phrases (the most one list may have)")
    return tuple(out.values())


def hotword_phrases(hotwords: Iterable[Hotword]) -> list[str]:
    """The phrases of a normalised list, without their weights."""
    return [h if isinstance(h, str) else h[0] for h in hotwords]


def spellings(phrase: str) -> list[str]:
    """The writings of a phrase the graph matches: each casing it may take (for phrases with cased letters:
    as written, lower, UPPER, Capitalised, Title Case), each with and without a leading space."""
    forms = [phrase]
    if phrase.lower() != phrase.upper():
        title = " ".join(w[:1].upper() + w[1:] for w in phrase.split(" "))
        forms += [phrase.lower(), phrase.upper(), phrase[:1].upper() + phrase[1:], title]
    forms = list(dict.fromkeys(forms))
    return forms + [" " + f for f in forms]


# ------------------------------------------------------------------------------------------- the graph
#: the characters that make words in Latin script (a regex class body): a phrase that starts (ends) with one
#: must start (end) at a word boundary in the text; the evaluation's phrase matching uses the same rule
WORD_CHARACTERS = "0-9A-Za-z\u00C0-\u024F"
_WORD_CHAR = re.compile(f"[{WORD_CHARACTERS}]")


def word_edges(texts: Sequence[str]) -> tuple[frozenset[int], frozenset[int]]:
    """From each token's text (by id): the tokens that start with a word character (they continue the word
    before them) and those that end with one (a word-initial phrase cannot start right after them)."""
    starts = frozenset(i for i, t in enumerate(texts) if t and _WORD_CHAR.match(t[0]))
    ends = frozenset(i for i, t in enumerate(texts) if t and _WORD_CHAR.match(t[-1]))
    return starts, ends


class ContextGraph:
    """Aho-Corasick automaton over token sequences, with the bonuses of the module docstring.

    ``sequences``: ``(token ids, bonus)`` or ``(token ids, bonus, total)``; ``bonus`` is one number for every
    token or one per token; ``total`` (default: the sum of the bonuses) is what the completed phrase earns
    in all: the last token's bonus makes the sum come to it, whatever the shared tokens before earned. States are node
    numbers, 0 = the root (no match).

    Word boundaries (when ``word_start``/``word_end``, the token sets of :func:`word_edges`, are given): a
    phrase written without a leading space whose first token starts with a word character does not start
    right after a token that ends with one (``"go"`` inside ``"algo"``; also not through a failure link from
    a longer match), and a phrase whose last token ends with a word character is only complete if the next
    token does not continue the word: if it does, the phrase's bonus is taken back (``"expression"``
    followed by ``"s"``).
    """

    ROOT = 0
    _ARC_CACHE = 4096  # states whose arcs are kept (tensors of the tokens leaving them)

    def __init__(self, sequences: Iterable[tuple], word_start: frozenset[int] = frozenset(),
                 word_end: frozenset[int] = frozenset()):
        import torch

        self.word_start = frozenset(word_start)
        self.word_end = frozenset(word_end)
        self.source: tuple | None = None  # (hotwords, default weight) when built by build_graph
        self._children: list[dict[int, int]] = [{}]
        self._token_score = [0.0]  # what a token extending a match earns (the largest of its phrases')
        self._total = [0.0]  # at a phrase's last node: what the completed phrase earns (the largest)
        self._end = [False]
        self._token = [-1]  # the token on the arc into the node
        for ids, weight, *total in sequences:
            if not ids:
                continue
            node = 0
            bonuses = list(weight) if isinstance(weight, (list, tuple)) else [float(weight)] * len(ids)
            for token, bonus in zip(ids, bonuses):
                child = self._children[node].get(int(token))
                if child is None:
                    child = len(self._children)
                    self._children[node][int(token)] = child
                    self._children.append({})
                    self._token_score.append(0.0)
                    self._total.append(0.0)
                    self._end.append(False)
                    self._token.append(int(token))
                self._token_score[child] = max(self._token_score[child], float(bonus))
                node = child
            self._end[node] = True
            self._total[node] = max(self._total[node], float(total[0]) if total else sum(bonuses))
        self._link()
        self._arcs: OrderedDict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._masks: dict[int, torch.Tensor] = {}
        root = self._children[0]
        self.root_ids = torch.tensor(list(root), dtype=torch.long)
        self.root_bonus = torch.tensor([self._pending[c] + self._gain[c] for c in root.values()])
        bounded = [t for t in root if t in self.word_start]  # phrase starts that need a word boundary
        self.bounded_ids = torch.tensor(bounded, dtype=torch.long)
        self.bounded_bonus = torch.tensor([self._pending[root[t]] + self._gain[root[t]] for t in bounded])

    def _link(self) -> None:
        """Failure links and the per-node scores, in breadth-first order (a node after its parent and after
        its failure target, which is shallower)."""
        n = len(self._children)
        self._fail = [0] * n
        score = [0.0] * n  # bonus collected from the root to the node
        anchor = [0.0] * n  # score of the deepest completed phrase above the node (its prefix) ...
        banked = [0.0] * n  # ... and what that phrase earned in all
        self._pending = [0.0] * n  # the unfinished match's bonus: taken back when it breaks
        self._gain = [0.0] * n  # banked on arrival: the phrase completed here
        self._revoke = [0.0] * n  # of the gain: what the next token takes back if it continues the word
        output = [-1] * n  # the deepest completed phrase on the node's failure chain, -1: none
        queue = [0]
        for node in queue:  # the list grows while it is walked: breadth first
            for token, child in self._children[node].items():
                queue.append(child)
                if node != 0:
                    f = self._fail[node]
                    while token not in self._children[f] and f != 0:
                        f = self._fail[f]
                    target = self._children[f].get(token, 0)
                    if f == 0 and self._token[node] in self.word_end and token in self.word_start:
                        target = 0  # that phrase would start inside a word (the suffixes above start where
                        # a suffix of the parent started, which was checked when its link was made)
                    self._fail[child] = target
                score[child] = score[node] + self._token_score[child]
                anchor[child] = score[node] if self._end[node] else anchor[node]
                banked[child] = self._total[node] if self._end[node] else banked[node]
                fail = self._fail[child]
                output[child] = fail if self._end[fail] else output[fail]
                if self._end[child]:  # completed: bank the phrase's total, less what a prefix phrase banked
                    self._gain[child] = self._total[child] - banked[child]
                else:
                    self._pending[child] = score[child] - anchor[child]
                    o = output[child]  # a listed phrase ends here inside a longer match: bank it too
                    self._gain[child] = self._total[o] - banked[o] if o >= 0 else 0.0
                if self._gain[child] and token in self.word_end:
                    self._revoke[child] = self._gain[child]

    def __len__(self) -> int:
        return len(self._children)

    def pending(self, state: int) -> float:
        """The bonus an unfinished match in ``state`` has collected (taken back if it breaks)."""
        return self._pending[state]

    def revoke(self, state: int) -> float:
        """What a token continuing the word takes back in ``state`` (a phrase just completed mid-word)."""
        return self._revoke[state]

    def is_end(self, state: int) -> bool:
        return self._end[state]

    def next_state(self, state: int, token: int, previous: int | None = None) -> int:
        """The state after writing ``token`` (``previous``: the token before it, None at the start): the
        deepest node that is a suffix of the text."""
        node = state
        while True:
            child = self._children[node].get(token)
            if child is not None:
                if node == 0 and previous in self.word_end and token in self.word_start:
                    return 0  # a phrase cannot start inside a word
                return child
            if node == 0:
                return 0
            node = self._fail[node]

    def bonus(self, state: int, token: int, previous: int | None = None) -> float:
        """What writing ``token`` in ``state`` adds to the hypothesis's score."""
        new = self.next_state(state, token, previous)
        revoked = self._revoke[state] if token in self.word_start else 0.0
        return self._pending[new] - self._pending[state] + self._gain[new] - revoked

    def walk(self, tokens: Iterable[int]) -> tuple[int, float]:
        """``(state, total bonus)`` after writing ``tokens`` from the start."""
        state, total, previous = 0, 0.0, None
        for token in tokens:
            token = int(token)
            total += self.bonus(state, token, previous)
            state, previous = self.next_state(state, token, previous), token
        return state, total

    def word_mask(self, vocab: int) -> torch.Tensor:
        """(vocab,) 1 at the tokens that continue a word (``word_start``), else 0."""
        import torch

        mask = self._masks.get(vocab)
        if mask is None:
            mask = self._masks[vocab] = torch.zeros(vocab)
            mask[[t for t in self.word_start if t < vocab]] = 1.0
        return mask

    def arcs(self, state: int, after_word: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens leaving a non-root ``state`` or a non-root state on its failure chain (the first found
        wins, as in :meth:`next_state`), and per token its bonus less what :class:`HotwordBooster` gives every
        row in this state (``-pending``, and the root's bonus unless ``after_word`` bars the token)."""
        import torch

        key = (state, after_word)
        cached = self._arcs.get(key)
        if cached is not None:
            self._arcs.move_to_end(key)
            return cached
        reach: dict[int, int] = {}
        node = state
        while node != 0:
            for token, child in self._children[node].items():
                reach.setdefault(token, child)
            node = self._fail[node]
        root = self._children[0]
        ids = list(reach)
        rest = []
        for token in ids:
            new, first = reach[token], root.get(token)
            given = 0.0
            if first is not None and not (after_word and token in self.word_start):
                given = self._pending[first] + self._gain[first]
            rest.append(self._pending[new] + self._gain[new] - given)
        cached = (torch.tensor(ids, dtype=torch.long), torch.tensor(rest))
        self._arcs[key] = cached
        if len(self._arcs) > self._ARC_CACHE:
            self._arcs.popitem(last=False)
        return cached


class HotwordList:
    """A normalised hotword list as one model's tokenizer writes it (built once per list and cached by the
    pipeline): each spelling's token ids and bonuses, the context graph of the whole list (:attr:`graph`),
    and the graphs of the subsets the CTC pre-filter keeps per utterance (:meth:`booster`).

    A phrase earns the same in every spelling: ``weight`` times the tokens of its shortest spelling. Each
    spelling spreads it over its tokens in proportion to the characters each writes (spaces aside), evenly
    without ``token_texts`` (each token's text, by id, which also enables the word-boundary rules): a token
    of one letter says little about which word is being written (the demo model's tokenizer starts many
    English words with one), and UPPER CASE often takes a token per letter; paid per token, those would
    outbid the audio and the other spellings.
    """

    #: subset graphs kept (an utterance's kept phrases are few, so a subset's graph is cheap to build)
    SUBSET_CACHE = 256

    def __init__(self, tokenizer: Any, hotwords: Sequence[Hotword], weight: float,
                 token_texts: Sequence[str] | None = None):
        spelled: list[tuple[int, float]] = []  # (phrase number, weight) per spelling
        texts: list[str] = []
        for n, entry in enumerate(hotwords):
            phrase, w = (entry, weight) if isinstance(entry, str) else entry
            for form in spellings(phrase):
                texts.append(form)
                spelled.append((n, w))
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        shortest: dict[int, int] = {}
        for (n, _), seq in zip(spelled, ids):
            if seq:
                shortest[n] = min(shortest.get(n, len(seq)), len(seq))
        self.phrases = len(hotwords)
        self.hotwords, self.weight = tuple(hotwords), float(weight)  # what the graphs' ``source`` says
        self.sequences: list[tuple[list[int], list[float], float]] = []  # (ids, bonus per token, total)
        self.owner: list[int] = []  # the phrase of each sequence
        for (n, w), seq in zip(spelled, ids):
            if not seq:
                continue
            total = w * shortest[n]
            sizes = ([len(token_texts[t].replace(" ", "")) for t in seq] if token_texts is not None
                     else [1] * len(seq))
            if not sum(sizes):
                sizes = [1] * len(seq)
            self.sequences.append((list(seq), [total * k / sum(sizes) for k in sizes], total))
            self.owner.append(n)
        self.word_start, self.word_end = word_edges(token_texts) if token_texts is not None else (frozenset(),
                                                                                                  frozenset())
        self._graph: ContextGraph | None = None
        self._subsets: OrderedDict[frozenset[int], ContextGraph] = OrderedDict()
        self._lock = threading.Lock()  # the server decodes batches in several threads

    @property
    def graph(self) -> ContextGraph:
        """The context graph of every phrase (built on first use)."""
        with self._lock:
            if self._graph is None:
                self._graph = ContextGraph(self.sequences, self.word_start, self.word_end)
                self._graph.source = (self.hotwords, self.weight)
            return self._graph

    def subgraph(self, kept: frozenset[int]) -> ContextGraph:
        """The context graph of the phrases numbered ``kept`` (cached)."""
        with self._lock:
            graph = self._subsets.get(kept)
            if graph is None:
                graph = ContextGraph([s for s, n in zip(self.sequences, self.owner) if n in kept], self.word_start,
                                     self.word_end)
                graph.source = (tuple(self.hotwords[n] for n in sorted(kept)), self.weight)
                self._subsets[kept] = graph
                if len(self._subsets) > self.SUBSET_CACHE:
                    self._subsets.popitem(last=False)
            else:
                self._subsets.move_to_end(kept)
            return graph

    def scores(self, log_probs: torch.Tensor, lengths: torch.Tensor | None,
               threshold: float = float("-inf")) -> torch.Tensor:
        """(B, phrases): each phrase's best :func:`ctc_keyword_scores` over its spellings (-inf: below
        ``threshold`` by the bound, not searched)."""
        import torch

        per_sequence = ctc_keyword_scores(log_probs, lengths, [s[0] for s in self.sequences], threshold)
        out = torch.full((per_sequence.shape[0], self.phrases), float("-inf"))
        owner = torch.tensor(self.owner, dtype=torch.long).expand(per_sequence.shape[0], -1)
        return out.scatter_reduce(1, owner, per_sequence, "amax")

    def kept(self, log_probs: torch.Tensor, lengths: torch.Tensor | None, threshold: float) -> list[frozenset[int]]:
        """Per utterance, the phrases whose CTC keyword score reaches ``threshold`` (the pre-filter)."""
        passed = self.scores(log_probs, lengths, threshold) >= threshold
        return [frozenset(row.nonzero().flatten().tolist()) for row in passed]

    def booster(self, log_probs: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                threshold: float | None = None) -> HotwordBooster | FilteredHotwordBooster:
        """The logits processor of this list: with CTC log-probabilities (B, T, C) and a ``threshold``, each
        utterance boosts only the phrases its CTC posteriors support (:meth:`kept`); else every phrase."""
        if log_probs is None or threshold is None:
            return HotwordBooster(self.graph)
        return FilteredHotwordBooster([self.subgraph(k) if k else None
                                       for k in self.kept(log_probs, lengths, threshold)])


def build_graph(tokenizer: Any, hotwords: Sequence[Hotword], weight: float,
                token_texts: Sequence[str] | None = None) -> ContextGraph:
    """The context graph of a normalised hotword list as ``tokenizer`` writes it (:class:`HotwordList`)."""
    return HotwordList(tokenizer, hotwords, weight, token_texts).graph


# ------------------------------------------------------------------------------------------- the booster
class HotwordBooster:
    """Adds the context graph's bonuses to next-token scores (a logits processor; see the module docstring).

    One instance per ``generate`` call: it remembers the states of the previous step's rows by prefix.
    """

    def __init__(self, graph: ContextGraph):
        self.graph = graph
        self._states: dict[tuple[int, ...], int] = {}
        self._tensors: dict[Any, Any] = {}  # the graph's tensors on the scores' device and dtype

    def states(self, prefixes: list[tuple[int, ...]]) -> list[int]:
        """The graph state of each row (remembered for the next step)."""
        graph, previous = self.graph, self._states
        current: dict[tuple[int, ...], int] = {}
        out = []
        for prefix in prefixes:
            state = current.get(prefix)
            if state is None:
                parent = previous.get(prefix[:-1]) if prefix else None
                if not prefix:
                    state = 0
                elif parent is None:  # not a row of the last step: from the start
                    state = graph.walk(prefix)[0]
                else:
                    state = graph.next_state(parent, prefix[-1], prefix[-2] if len(prefix) > 1 else None)
                current[prefix] = state
            out.append(state)
        self._states = current
        return out

    def spec(self, item: int) -> dict:
        """The booster as plain data for batch item ``item`` (engines that rebuild it in another process:
        :mod:`mooer.inference.request_processors`)."""
        if self.graph.source is None:
            raise ValueError("this context graph was not built from a hotword list (build_graph)")
        hotwords, weight = self.graph.source
        return {"kind": "hotwords", "hotwords": [list(h) if isinstance(h, tuple) else h for h in hotwords],
                "weight": weight}

    def _on(self, key: Any, scores: torch.Tensor, make: Any) -> Any:
        import torch

        value = self._tensors.get(key)
        if value is None:
            value = self._tensors[key] = tuple(t.to(scores.device, t.dtype if t.dtype == torch.long else scores.dtype)
                                               for t in make())
        return value

    def __call__(self, generated: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        graph = self.graph
        prefixes = [tuple(row) for row in generated.tolist()]
        states = self.states(prefixes)
        rows = scores.shape[0]
        pending = [graph.pending(s) for s in states]
        if any(pending):  # every token breaks an unfinished match unless the graph says otherwise
            out = scores - torch.tensor(pending, dtype=scores.dtype, device=scores.device).unsqueeze(1)
        else:
            out = scores.clone()
        root_ids, root_bonus, bounded_ids, bounded_bonus = self._on(
            "root", scores, lambda: (graph.root_ids, graph.root_bonus, graph.bounded_ids, graph.bounded_bonus))
        if len(root_ids):  # a phrase can start in every row...
            out.index_add_(1, root_ids, root_bonus.expand(rows, -1))
        after = [bool(p) and p[-1] in graph.word_end for p in prefixes]
        if len(bounded_ids) and any(after):  # ...but one that starts a word not right after a word character
            index = torch.tensor([r for r in range(rows) if after[r]], device=scores.device).unsqueeze(1)
            out[index, bounded_ids] -= bounded_bonus
        groups: dict[tuple[int, bool], list[int]] = {}
        for r, s in enumerate(states):
            if s:
                groups.setdefault((s, after[r]), []).append(r)
        for (s, after_word), members in groups.items():
            index = torch.tensor(members, device=scores.device).unsqueeze(1)
            revoke = graph.revoke(s)
            if revoke:  # a phrase ending in a word character just completed: continuing the word takes it back
                (mask,) = self._on(("words", scores.shape[1]), scores, lambda: (graph.word_mask(scores.shape[1]),))
                out[index.squeeze(1)] -= revoke * mask
            ids, values = self._on((s, after_word), scores, lambda: graph.arcs(s, after_word))
            if len(ids):
                out[index, ids] += values
        return out


class FilteredHotwordBooster:
    """Per utterance its own :class:`HotwordBooster` (its own graph: the phrases its CTC posteriors
    support), or none. Rows are item-major (``rows // len(graphs)`` per utterance), as every engine gives them."""

    def __init__(self, graphs: Sequence[ContextGraph | None]):
        self.boosters = [None if g is None else HotwordBooster(g) for g in graphs]

    def spec(self, item: int) -> dict | None:
        """Utterance ``item``'s booster as plain data (None: it boosts nothing); see HotwordBooster.spec."""
        booster = self.boosters[item]
        return None if booster is None else booster.spec(item)

    def __call__(self, generated: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not any(self.boosters):
            return scores
        per = scores.shape[0] // len(self.boosters)
        out = scores.clone()
        for b, booster in enumerate(self.boosters):
            if booster is not None:
                rows = slice(b * per, (b + 1) * per)
                out[rows] = booster(generated[rows], scores[rows])
        return out


# ------------------------------------------------------------------------------------------- the pre-filter
def ctc_keyword_scores(log_probs: torch.Tensor, lengths: torch.Tensor | None, sequences: Sequence[Sequence[int]],
                       threshold: float = float("-inf")) -> torch.Tensor:
    """How well the CTC posteriors of each utterance support each token sequence somewhere in it: (B, N).

    A keyword-spotting score (as in CTC word spotting): the best Viterbi path that writes the sequence (each
    token one or more frames, blanks between, a repeated token needing a blank) over any window of frames,
    where each frame scores its class's log-probability *relative to the frame's best class*
    (``log p_t(c) - max_c' log p_t(c')``, so 0 where the path is the frame's best guess and the frames
    around the window cost nothing), divided by the sequence's tokens. 0: the CTC head's own best path
    writes the sequence; a few units below: it heard something close (a syllable or letter off); far below:
    nothing like it.

    ``log_probs``: (B, T, C) CTC log-probabilities, blank = class C - 1; ``lengths``: (B,) valid frames (None:
    all). Pairs whose bound ``sum_i max_t`` (each token's best frame, which no path can beat) is below
    ``threshold`` per token are not searched and score ``-inf``: with a threshold the search only runs on
    the few pairs that could pass.
    """
    import torch

    x = log_probs.detach().float().cpu()
    b_size, t_max, classes = x.shape
    n = len(sequences)
    out = torch.full((b_size, n), float("-inf"))
    if not n or not t_max:
        return out
    size = torch.tensor([len(s) for s in sequences])
    width = int(size.max())
    # one tensor from padded lists (a tensor per sequence would cost more than the search for 1,000 phrases)
    tokens = torch.tensor([list(s) + [0] * (width - len(s)) for s in sequences], dtype=torch.long)
    tokens = tokens.clamp(max=classes - 2)
    # only the classes the sequences use (and blank, last) are looked at: far fewer than the vocabulary
    used = torch.unique(tokens)
    x = x[:, :, torch.cat([used, torch.tensor([classes - 1])])] - x.max(dim=-1, keepdim=True).values  # relative
    tokens, blank = torch.searchsorted(used, tokens), len(used)
    if lengths is not None:
        beyond = torch.arange(t_max).unsqueeze(0) >= lengths.cpu().view(-1, 1)
        x = x.masked_fill(beyond.unsqueeze(-1), float("-inf"))
    valid = torch.arange(width).unsqueeze(0) < size.unsqueeze(1)  # (N, L)
    best = x.max(dim=1).values  # (B, C): each class's best frame
    bound = best[:, tokens].masked_fill(~valid, 0.0).sum(-1) / size.clamp(min=1)  # (B, N)
    pairs = (bound >= threshold).nonzero()
    if not len(pairs):
        return out
    rows, seqs = pairs[:, 0], pairs[:, 1]
    tok = tokens[seqs]  # (K, L)
    emit = x[rows.view(-1, 1, 1), torch.arange(t_max).view(1, -1, 1), tok.unsqueeze(1)]  # (K, T, L)
    blanks = x[rows, :, blank]  # (K, T)
    # a token may follow the one before it without a blank only if they differ
    direct = torch.cat([torch.zeros(len(tok), 1, dtype=torch.bool), tok[:, 1:] != tok[:, :-1]], dim=1)
    neg = float("-inf")
    on = torch.full((len(tok), width), neg)  # best path ending in token i at this frame
    gap = torch.full((len(tok), width), neg)  # best path ending in a blank after token i
    last = (size[seqs] - 1).unsqueeze(1)
    result = torch.full((len(tok),), neg)
    start = torch.full((len(tok), 1), 0.0)
    apart = ~direct[:, 1:]
    for t in range(t_max):
        came = torch.maximum(on, gap)  # into the blank after token i
        before = torch.cat([start, torch.maximum(gap[:, :-1], on[:, :-1].masked_fill(apart, neg))], dim=1)
        on = emit[:, t] + torch.maximum(on, before)
        gap = blanks[:, t : t + 1] + came
        result = torch.maximum(result, on.gather(1, last).squeeze(1))
    out[rows, seqs] = result / size[seqs].float()
    return out
