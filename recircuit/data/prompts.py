"""TALLRec prompts: the instruction, the input text and the :class:`Sample` record.

Usage::

    from recircuit.data.prompts import Sample, make_sample
    s = make_sample(user_id=1, history=[(10, "A (1995)", 5), (11, "B (1996)", 2)],
                    target=(12, "C (1994)", 4))
    s.prompt    # the full Alpaca-style prompt, ending in "### Response:"
    s.answer    # " Yes." (rating > 3) or " No."
    s.liked, s.disliked, s.target          # ('A (1995)',), ('B (1996)',), 'C (1994)'
    s.liked_ids, s.disliked_ids            # (10,), (11,)
    s.with_history(["B (1996)"], ["A (1995)"], liked_ids=[11], disliked_ids=[10])  # a counterfactual

A :class:`Sample` keeps what its prompt shows as structured fields (``liked``, ``disliked``,
``target`` titles and their item ids), so code that changes a prompt (the circuit corruptions)
edits those fields and re-renders with :func:`build_input`; nothing parses rendered text back.
Samples built without them (bare TALLRec JSON) get the titles parsed once, at construction, from
their input (:func:`parse_input`); their ids stay ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

INSTRUCTION = (
    "Given the user's preference and unpreference, identify whether the user will like the "
    'target movie by answering "Yes." or "No.".'
)

#: The Alpaca template TALLRec trains with; the answer follows ``### Response:``.
PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)

#: Ratings strictly above this are a "Yes." (liked).
LIKE_THRESHOLD = 3


@dataclass(frozen=True)
class Sample:
    """One recommendation query: a user's history and a target item, with the Yes/No label.

    Attributes:
        instruction: the task instruction.
        input: the ``User Preference / User Unpreference / Whether ...`` text.
        output: ``"Yes."`` or ``"No."``.
        user_id: MovieLens user id (``None`` for data loaded from bare TALLRec JSON).
        item_id: target item id (``None`` when unknown).
        history: item ids of the history, oldest first.
        history_ratings: ratings of ``history``, same order.
        uid: a stable sample id (e.g. ``"u196:i242:t881250949"``) used by splits and audits.
        liked: titles of the ``User Preference`` list, as shown (``None`` if the input is not in
            TALLRec's movie format).
        disliked: titles of the ``User Unpreference`` list, as shown.
        target: the target title, as shown.
        liked_ids: item ids of ``liked``, same order (``None`` when unknown, e.g. bare JSON).
        disliked_ids: item ids of ``disliked``, same order (``None`` when unknown).

    ``history``/``history_ratings`` record the user's real interactions; ``liked``/``disliked``/
    ``target`` (and ids) record what the prompt shows, which a counterfactual sample
    (:meth:`with_history`, :meth:`with_target`) changes while keeping ``uid``, ``user_id`` and
    ``history``. When the titles are not given they are parsed from ``input`` at construction.
    """

    instruction: str
    input: str
    output: str
    user_id: int | None = None
    item_id: int | None = None
    history: tuple[int, ...] = ()
    history_ratings: tuple[float, ...] = ()
    uid: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    liked: tuple[str, ...] | None = None
    disliked: tuple[str, ...] | None = None
    target: str | None = None
    liked_ids: tuple[int, ...] | None = None
    disliked_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.liked is None or self.disliked is None or self.target is None:
            parsed = parse_input(self.input)
            if parsed is not None:
                liked, disliked, target = parsed
                object.__setattr__(self, "liked", tuple(liked) if self.liked is None else self.liked)
                object.__setattr__(self, "disliked", tuple(disliked) if self.disliked is None else self.disliked)
                object.__setattr__(self, "target", target if self.target is None else self.target)

    @property
    def target_id(self) -> int | None:
        """Item id of the target shown (``item_id``)."""
        return self.item_id

    @property
    def structured(self) -> bool:
        """True when the history and target titles are known (needed by corruptions)."""
        return self.liked is not None and self.disliked is not None and self.target is not None

    @property
    def label(self) -> int:
        """1 for ``"Yes."``, 0 for ``"No."``."""
        return 1 if self.output.strip().startswith("Yes") else 0

    @property
    def prompt(self) -> str:
        """The full prompt text, ending right before the answer."""
        return PROMPT_TEMPLATE.format(instruction=self.instruction, input=self.input)

    @property
    def answer(self) -> str:
        """The answer continuation, ``" Yes."`` or ``" No."``."""
        return " " + self.output.strip()

    def to_tallrec(self) -> dict[str, str]:
        """The TALLRec JSON record ``{"instruction", "input", "output"}``."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output}

    def _require_structured(self, what: str) -> None:
        if not self.structured:
            raise ValueError(f"Sample {self.uid or '(no uid)'}: {what} needs the history and target titles, and its "
                             f"input is not in TALLRec's movie format ({self.input[:60]!r}...).")

    def with_history(self, liked: Sequence[str], disliked: Sequence[str],
                     liked_ids: Sequence[int] | None = None, disliked_ids: Sequence[int] | None = None) -> Sample:
        """A counterfactual copy showing other liked/disliked titles (same target, uid and user).

        Raises:
            ValueError: when this sample has no structured titles, or ids and titles differ in length.
        """
        self._require_structured("with_history")
        for ids, titles, name in ((liked_ids, liked, "liked"), (disliked_ids, disliked, "disliked")):
            if ids is not None and len(ids) != len(titles):
                raise ValueError(f"{name}_ids has {len(ids)} ids for {len(titles)} titles.")
        return replace(self, input=build_input(liked, disliked, self.target), liked=tuple(liked),  # type: ignore[arg-type]
                       disliked=tuple(disliked),
                       liked_ids=None if liked_ids is None else tuple(int(i) for i in liked_ids),
                       disliked_ids=None if disliked_ids is None else tuple(int(i) for i in disliked_ids))

    def with_target(self, title: str, item_id: int | None = None) -> Sample:
        """A counterfactual copy showing another target title (same history, label, uid and user).

        Raises:
            ValueError: when this sample has no structured titles.
        """
        self._require_structured("with_target")
        return replace(self, input=build_input(self.liked, self.disliked, title), target=title,  # type: ignore[arg-type]
                       item_id=None if item_id is None else int(item_id))


def quote_titles(titles: Sequence[str]) -> str:
    """``["A", "B"]`` -> ``'"A", "B"'`` as TALLRec writes lists."""
    return ", ".join(f'"{t}"' for t in titles)


def build_input(liked: Sequence[str], disliked: Sequence[str], target: str) -> str:
    """The TALLRec input text for liked/disliked history titles and a target title."""
    return (
        f"User Preference: {quote_titles(liked)}\n"
        f"User Unpreference: {quote_titles(disliked)}\n"
        f'Whether the user will like the target movie "{target}"?'
    )


_INPUT_RE = re.compile(
    r'^User Preference: (?P<liked>.*)\nUser Unpreference: (?P<disliked>.*)\n'
    r'Whether the user will like the target movie "(?P<target>.*)"\?$',
    re.S,
)
_TITLE_RE = re.compile(r'"([^"]*)"')


def parse_input(text: str) -> tuple[list[str], list[str], str] | None:
    """Liked titles, disliked titles and target title of a TALLRec movie input; ``None`` otherwise.

    Used once, when a :class:`Sample` is built from bare text (TALLRec JSON). A title containing
    a double quote cannot be recovered from text; samples built by :func:`make_sample` carry
    their titles and never need this.
    """
    m = _INPUT_RE.match(text)
    if not m:
        return None
    return _TITLE_RE.findall(m["liked"]), _TITLE_RE.findall(m["disliked"]), m["target"]


def label_of(rating: float) -> str:
    """``"Yes."`` if ``rating > 3`` else ``"No."``."""
    return "Yes." if float(rating) > LIKE_THRESHOLD else "No."


def make_sample(
    user_id: int,
    history: Sequence[tuple[int, str, float]],
    target: tuple[int, str, float],
    timestamp: int | None = None,
) -> Sample:
    """Build a :class:`Sample` from ``(item_id, title, rating)`` history triples and a target.

    Args:
        user_id: the user.
        history: oldest-first ``(item_id, title, rating)`` of the history window.
        target: ``(item_id, title, rating)`` of the item to predict.
        timestamp: the target interaction's timestamp, used in the sample uid.
    """
    liked = [(int(i), t) for i, t, r in history if float(r) > LIKE_THRESHOLD]
    disliked = [(int(i), t) for i, t, r in history if float(r) <= LIKE_THRESHOLD]
    item, title, rating = target
    uid = f"u{user_id}:i{item}" + (f":t{timestamp}" if timestamp is not None else "")
    return Sample(
        instruction=INSTRUCTION,
        input=build_input([t for _, t in liked], [t for _, t in disliked], title),
        output=label_of(rating),
        user_id=int(user_id),
        item_id=int(item),
        history=tuple(int(i) for i, _, _ in history),
        history_ratings=tuple(float(r) for _, _, r in history),
        uid=uid,
        liked=tuple(t for _, t in liked),
        disliked=tuple(t for _, t in disliked),
        target=title,
        liked_ids=tuple(i for i, _ in liked),
        disliked_ids=tuple(i for i, _ in disliked),
    )
