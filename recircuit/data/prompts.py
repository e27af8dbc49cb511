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

    b = make_sample(1, [(10, "The Glass Orchard", 9), (11, "Salt Roads", 2)], (12, "Night Ferry", 8),
                    domain="book", like_threshold=6, authors={10: "Ada Vell", 11: "R. Moss", 12: "Ina Lark"})
    b.input     # 'User Preference: "The Glass Orchard" written by Ada Vell\n...target book "Night Ferry" written by Ina Lark?'
    b.liked_items[0]                        # Item(title='The Glass Orchard', author='Ada Vell', id=10)

A :class:`Sample` keeps what its prompt shows as structured fields (``liked``, ``disliked``,
``target`` titles, their item ids and, for books, their authors) and its ``domain``, so code that
changes a prompt (the circuit corruptions) edits those fields (:meth:`Sample.with_items`,
:meth:`Sample.with_target_item`) and re-renders through the domain's spec
(:mod:`recircuit.data.domains`); nothing parses rendered text back. Samples built without them
(bare TALLRec JSON) get the items parsed once, at construction, from their input, the domain
detected from the target noun; their ids stay ``None``. The movie prompts are TALLRec's, byte for
byte; the like threshold (``rating > 3`` by default) is a parameter of :func:`make_sample`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from recircuit.data.domains import DomainSpec, Item, detect_domain, get_domain

#: TALLRec's movie instruction (other domains: ``get_domain(name).instruction``).
INSTRUCTION = get_domain("movie").instruction

#: The Alpaca template TALLRec trains with; the answer follows ``### Response:``.
PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)

#: Ratings strictly above this are a "Yes." (liked) by default: MovieLens' 1-5 stars, as TALLRec.
LIKE_THRESHOLD = 3


@dataclass(frozen=True)
class Sample:
    """One recommendation query: a user's history and a target item, with the Yes/No label.

    Attributes:
        instruction: the task instruction.
        input: the ``User Preference / User Unpreference / Whether ...`` text.
        output: ``"Yes."`` or ``"No."``.
        user_id: the data set's user id (``None`` for data loaded from bare TALLRec JSON).
        item_id: target item id (``None`` when unknown).
        history: item ids of the history, oldest first.
        history_ratings: ratings of ``history``, same order.
        uid: a stable sample id (e.g. ``"u196:i242:t881250949"``) used by splits and audits.
        liked: titles of the ``User Preference`` list, as shown (``None`` if the input is in no
            registered domain's TALLRec format).
        disliked: titles of the ``User Unpreference`` list, as shown.
        target: the target title, as shown.
        liked_ids: item ids of ``liked``, same order (``None`` when unknown, e.g. bare JSON).
        disliked_ids: item ids of ``disliked``, same order (``None`` when unknown).
        domain: the :mod:`recircuit.data.domains` name whose rendering the input uses
            (``"movie"``, ``"book"``...); ``None`` only for an input in no registered format.
        liked_authors: authors of ``liked``, same order (``None`` for domains without authors;
            an entry is ``None`` where the author is unknown).
        disliked_authors: authors of ``disliked``.
        target_author: the target's author.

    ``history``/``history_ratings`` record the user's real interactions; the item fields record
    what the prompt shows, which a counterfactual sample (:meth:`with_items`,
    :meth:`with_target_item`) changes while keeping ``uid``, ``user_id`` and ``history``. When
    the items are not given they are parsed from ``input`` at construction (the domain is
    detected when not given).
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
    domain: str | None = None
    liked_authors: tuple[str | None, ...] | None = None
    disliked_authors: tuple[str | None, ...] | None = None
    target_author: str | None = None

    def __post_init__(self) -> None:
        if self.liked is None or self.disliked is None or self.target is None:
            if self.domain is None:
                found = detect_domain(self.input)
                spec, parsed = found if found is not None else (None, None)
            else:
                spec = get_domain(self.domain)
                parsed = spec.parse_input(self.input)
            if spec is not None and parsed is not None:
                liked, disliked, target = parsed
                object.__setattr__(self, "domain", spec.name)
                set_ = lambda name, value: object.__setattr__(self, name, value) if getattr(self, name) is None else None  # noqa: E731
                set_("liked", tuple(i.title for i in liked))
                set_("disliked", tuple(i.title for i in disliked))
                set_("target", target.title)
                if spec.has_author:
                    set_("liked_authors", tuple(i.author for i in liked))
                    set_("disliked_authors", tuple(i.author for i in disliked))
                    set_("target_author", target.author)
        elif self.domain is None:
            object.__setattr__(self, "domain", "movie")

    @property
    def target_id(self) -> int | None:
        """Item id of the target shown (``item_id``)."""
        return self.item_id

    @property
    def structured(self) -> bool:
        """True when the history and target titles are known (needed by corruptions)."""
        return self.liked is not None and self.disliked is not None and self.target is not None

    @property
    def spec(self) -> DomainSpec:
        """The :class:`~recircuit.data.domains.DomainSpec` of ``domain`` (movie when unknown)."""
        return get_domain(self.domain or "movie")

    @staticmethod
    def _items(titles: Sequence[str], ids: Sequence[int] | None, authors: Sequence[str | None] | None) -> tuple[Item, ...]:
        return tuple(Item(t, None if authors is None else authors[k], None if ids is None else ids[k])
                     for k, t in enumerate(titles))

    @property
    def liked_items(self) -> tuple[Item, ...]:
        """The ``User Preference`` items (title, author, id), as shown."""
        self._require_structured("liked_items")
        return self._items(self.liked, self.liked_ids, self.liked_authors)  # type: ignore[arg-type]

    @property
    def disliked_items(self) -> tuple[Item, ...]:
        """The ``User Unpreference`` items (title, author, id), as shown."""
        self._require_structured("disliked_items")
        return self._items(self.disliked, self.disliked_ids, self.disliked_authors)  # type: ignore[arg-type]

    @property
    def target_item(self) -> Item:
        """The target item (title, author, id), as shown."""
        self._require_structured("target_item")
        return Item(self.target, self.target_author, self.item_id)  # type: ignore[arg-type]

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
            raise ValueError(f"Sample {self.uid or '(no uid)'}: {what} needs the history and target items, and its "
                             f"input is in no registered domain's TALLRec format ({self.input[:60]!r}...).")

    def with_items(self, liked: Sequence[Item], disliked: Sequence[Item]) -> Sample:
        """A counterfactual copy showing other liked/disliked items (same target, uid and user).

        The ids are kept when every item of a list has one (else that list's ids become
        ``None``); authors are kept for domains that show them.

        Raises:
            ValueError: when this sample has no structured items.
        """
        self._require_structured("with_items")
        spec = self.spec
        liked, disliked = tuple(liked), tuple(disliked)

        def ids(items: tuple[Item, ...]) -> tuple[int, ...] | None:
            return None if any(i.id is None for i in items) else tuple(int(i.id) for i in items)  # type: ignore[arg-type]

        return replace(self, input=spec.input_text(liked, disliked, self.target_item),
                       liked=tuple(i.title for i in liked), disliked=tuple(i.title for i in disliked),
                       liked_ids=ids(liked), disliked_ids=ids(disliked),
                       liked_authors=tuple(i.author for i in liked) if spec.has_author else None,
                       disliked_authors=tuple(i.author for i in disliked) if spec.has_author else None)

    def with_target_item(self, item: Item) -> Sample:
        """A counterfactual copy showing another target item (same history, label, uid and user).

        Raises:
            ValueError: when this sample has no structured items.
        """
        self._require_structured("with_target_item")
        spec = self.spec
        return replace(self, input=spec.input_text(self.liked_items, self.disliked_items, item), target=item.title,
                       item_id=None if item.id is None else int(item.id),
                       target_author=item.author if spec.has_author else None)

    def with_history(self, liked: Sequence[str], disliked: Sequence[str],
                     liked_ids: Sequence[int] | None = None, disliked_ids: Sequence[int] | None = None,
                     liked_authors: Sequence[str | None] | None = None,
                     disliked_authors: Sequence[str | None] | None = None) -> Sample:
        """A counterfactual copy showing other liked/disliked titles (same target, uid and user).

        For a domain that shows authors (books) pass ``liked_authors``/``disliked_authors`` too,
        or use :meth:`with_items`.

        Raises:
            ValueError: when this sample has no structured titles, ids or authors and titles
                differ in length, or authors are missing for a domain that shows them.
        """
        self._require_structured("with_history")
        for ids, titles, name in ((liked_ids, liked, "liked_ids"), (disliked_ids, disliked, "disliked_ids"),
                                  (liked_authors, liked, "liked_authors"),
                                  (disliked_authors, disliked, "disliked_authors")):
            if ids is not None and len(ids) != len(titles):
                raise ValueError(f"{name} has {len(ids)} entries for {len(titles)} titles.")
        if self.spec.has_author and ((liked and liked_authors is None) or (disliked and disliked_authors is None)):
            raise ValueError(f"{self.spec.name} items show their author: pass liked_authors and disliked_authors "
                             "(or use with_items)")
        la = [None] * len(liked) if liked_authors is None else list(liked_authors)
        da = [None] * len(disliked) if disliked_authors is None else list(disliked_authors)
        return self.with_items(
            [Item(t, la[k], None if liked_ids is None else int(liked_ids[k])) for k, t in enumerate(liked)],
            [Item(t, da[k], None if disliked_ids is None else int(disliked_ids[k])) for k, t in enumerate(disliked)])

    def with_target(self, title: str, item_id: int | None = None, author: str | None = None) -> Sample:
        """A counterfactual copy showing another target title (same history, label, uid and user).

        Raises:
            ValueError: when this sample has no structured titles.
        """
        return self.with_target_item(Item(title, author, item_id))


def quote_titles(titles: Sequence[str]) -> str:
    """``["A", "B"]`` -> ``'"A", "B"'`` as TALLRec writes lists."""
    return ", ".join(f'"{t}"' for t in titles)


def build_input(liked: Sequence[str], disliked: Sequence[str], target: str) -> str:
    """The TALLRec movie input text for liked/disliked history titles and a target title.

    Other domains: :meth:`recircuit.data.domains.DomainSpec.input_text`.
    """
    return (
        f"User Preference: {quote_titles(liked)}\n"
        f"User Unpreference: {quote_titles(disliked)}\n"
        f'Whether the user will like the target movie "{target}"?'
    )


def parse_input(text: str, domain: str = "movie") -> tuple[list[str], list[str], str] | None:
    """Liked titles, disliked titles and target title of a TALLRec input of ``domain``; ``None`` otherwise.

    Used once, when a :class:`Sample` is built from bare text (TALLRec JSON). A title containing
    a double quote cannot be recovered from text; samples built by :func:`make_sample` carry
    their titles and never need this. Authors: :meth:`recircuit.data.domains.DomainSpec.parse_input`.
    """
    parsed = get_domain(domain).parse_input(text)
    if parsed is None:
        return None
    liked, disliked, target = parsed
    return [i.title for i in liked], [i.title for i in disliked], target.title


def label_of(rating: float, threshold: float = LIKE_THRESHOLD) -> str:
    """``"Yes."`` if ``rating > threshold`` (default 3, MovieLens' 1-5 stars) else ``"No."``."""
    return "Yes." if float(rating) > threshold else "No."


def make_sample(
    user_id: int,
    history: Sequence[tuple[int, str, float]],
    target: tuple[int, str, float],
    timestamp: int | None = None,
    *,
    domain: str = "movie",
    like_threshold: float = LIKE_THRESHOLD,
    authors: Mapping[int, str | None] | None = None,
    uid: str | None = None,
) -> Sample:
    """Build a :class:`Sample` from ``(item_id, title, rating)`` history triples and a target.

    Args:
        user_id: the user.
        history: oldest-first ``(item_id, title, rating)`` of the history window.
        target: ``(item_id, title, rating)`` of the item to predict.
        timestamp: the target interaction's timestamp, used in the sample uid.
        domain: a registered domain (:func:`recircuit.data.domains.get_domain`): its noun, its
            instruction and its item rendering.
        like_threshold: ratings strictly above it are liked (the history's preference list and
            the ``"Yes."`` label).
        authors: item id -> author, for domains that show one (``None``: unknown).
        uid: the sample id; default ``"u<user>:i<item>[:t<timestamp>]"``.
    """
    spec = get_domain(domain)
    author = (lambda i: (authors or {}).get(i)) if spec.has_author else (lambda i: None)
    liked = [Item(t, author(int(i)), int(i)) for i, t, r in history if float(r) > like_threshold]
    disliked = [Item(t, author(int(i)), int(i)) for i, t, r in history if float(r) <= like_threshold]
    item, title, rating = target
    shown = Item(title, author(int(item)), int(item))
    if uid is None:
        uid = f"u{user_id}:i{item}" + (f":t{timestamp}" if timestamp is not None else "")
    return Sample(
        instruction=spec.instruction,
        input=spec.input_text(liked, disliked, shown),
        output=label_of(rating, like_threshold),
        user_id=int(user_id),
        item_id=int(item),
        history=tuple(int(i) for i, _, _ in history),
        history_ratings=tuple(float(r) for _, _, r in history),
        uid=uid,
        liked=tuple(i.title for i in liked),
        disliked=tuple(i.title for i in disliked),
        target=title,
        liked_ids=tuple(int(i.id) for i in liked),  # type: ignore[arg-type]
        disliked_ids=tuple(int(i.id) for i in disliked),  # type: ignore[arg-type]
        domain=spec.name,
        liked_authors=tuple(i.author for i in liked) if spec.has_author else None,
        disliked_authors=tuple(i.author for i in disliked) if spec.has_author else None,
        target_author=shown.author,
    )
