"""TALLRec prompts: the instruction, the input text and the :class:`Sample` record.

Usage::

    from recircuit.data.prompts import Sample, make_sample
    s = make_sample(user_id=1, history=[(10, "A (1995)", 5), (11, "B (1996)", 2)],
                    target=(12, "C (1994)", 4))
    s.prompt    # the full Alpaca-style prompt, ending in "### Response:"
    s.answer    # " Yes." (rating > 3) or " No."
"""

from __future__ import annotations

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

    def with_input(self, new_input: str) -> Sample:
        """A copy with another input text (used by counterfactual corruptions)."""
        return replace(self, input=new_input)


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
    liked = [t for _, t, r in history if float(r) > LIKE_THRESHOLD]
    disliked = [t for _, t, r in history if float(r) <= LIKE_THRESHOLD]
    item, title, rating = target
    uid = f"u{user_id}:i{item}" + (f":t{timestamp}" if timestamp is not None else "")
    return Sample(
        instruction=INSTRUCTION,
        input=build_input(liked, disliked, title),
        output=label_of(rating),
        user_id=int(user_id),
        item_id=int(item),
        history=tuple(int(i) for i, _, _ in history),
        history_ratings=tuple(float(r) for _, _, r in history),
        uid=uid,
    )
