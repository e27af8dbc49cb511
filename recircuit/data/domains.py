"""Recommendation domains: the item noun and how an item renders in a TALLRec prompt, in a registry.

Usage::

    from recircuit.data.domains import Item, get_domain, register_domain, DomainSpec
    book = get_domain("book")
    book.render(Item("The Glass Orchard", "Ada Vell"))      # '"The Glass Orchard" written by Ada Vell'
    text = book.input_text([Item("A", "X")], [], Item("B", "Y"))
    book.parse_input(text)          # ([Item('A', 'X')], [], Item('B', 'Y'))
    book.instruction                # "... whether the user will like the target book by answering ..."

Registered domains:

* ``movie``: ``"Title"`` (TALLRec's movie prompts, byte for byte);
* ``book``: ``"Title" written by Author`` (TALLRec's BookCrossing prompts; an item without an
  author renders as ``"Title"``);
* ``book-tallrec``: the same, with the target quoted once more (``""Title" written by Author"``),
  as in TALLRec's published ``data/book`` files; read from such files, never chosen for builds;
* ``game``: ``"Title"``.

Every domain shares TALLRec's input shape::

    User Preference: <item>, <item>
    User Unpreference: <item>
    Whether the user will like the target <noun> <item>?

:meth:`DomainSpec.parse_input` recovers the structured items from such a text (used once, when
TALLRec JSON is read). A title that
holds a double quote cannot be recovered from text; samples built from ratings carry their
items and never need parsing. Add a domain with :func:`register_domain`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from recircuit.errors import InputError

__all__ = ["DOMAINS", "DomainSpec", "Item", "detect_domain", "domain_names", "get_domain", "register_domain"]


@dataclass(frozen=True)
class Item:
    """One item as a prompt shows it.

    Attributes:
        title: the title, verbatim.
        author: the author (books); ``None`` where the domain has none or it is unknown.
        id: the data set's item id; ``None`` when unknown (items parsed from TALLRec JSON).
    """

    title: str
    author: str | None = None
    id: int | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        """What the prompt shows of the item, ``(title, author)`` (the id is not shown)."""
        return (self.title, self.author)


def _quoted(item: Item) -> str:
    return f'"{item.title}"'


def _written_by(item: Item) -> str:
    return f'"{item.title}" written by {item.author}' if item.author else f'"{item.title}"'


_TITLE_RE = re.compile(r'"([^"]*)"')
_BOOK_RE = re.compile(r'"([^"]*)"(?: written by (.*?))?(?=, "|$)', re.S)
_BOOK_TARGET_RE = re.compile(r'^"([^"]*)"(?: written by (.*))?$', re.S)
_TALLREC_BOOK_TARGET_RE = re.compile(r'^""([^"]*)"(?: written by (.*))?"$', re.S)


def _parse_quoted(text: str) -> list[Item]:
    return [Item(t) for t in _TITLE_RE.findall(text)]


def _parse_quoted_target(text: str) -> Item | None:
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return None
    return Item(text[1:-1])


def _parse_books(text: str) -> list[Item]:
    return [Item(t, a or None) for t, a in _BOOK_RE.findall(text)]


def _parse_book_target(text: str) -> Item | None:
    m = _BOOK_TARGET_RE.match(text)
    return None if m is None else Item(m[1], m[2] or None)


def _tallrec_book_target(item: Item) -> str:
    return f'"{_written_by(item)}"'


def _parse_tallrec_book_target(text: str) -> Item | None:
    m = _TALLREC_BOOK_TARGET_RE.match(text)
    return None if m is None else Item(m[1], m[2] or None)


@dataclass(frozen=True)
class DomainSpec:
    """A recommendation domain.

    Attributes:
        name: registry name (``"movie"``, ``"book"``, ...).
        noun: the item noun in the prompt (``"target movie"``).
        fields: the item fields the rendering shows (``("title",)`` or ``("title", "author")``).
        render: ``Item -> str``, the item as the prompt shows it.
        render_target: the target's rendering where it differs from ``render`` (TALLRec's
            published book data quotes the whole target once more).
        parse_list: the items of a rendered ``User Preference`` list (inverse of rendering).
        parse_target: the target item of its rendered text, ``None`` if it does not parse.
    """

    name: str
    noun: str
    fields: tuple[str, ...]
    render: Callable[[Item], str]
    parse_list: Callable[[str], list[Item]]
    parse_target: Callable[[str], Item | None]
    render_target: Callable[[Item], str] | None = None

    @property
    def instruction(self) -> str:
        """TALLRec's instruction for this domain (the movie one is TALLRec's, byte for byte)."""
        return ("Given the user's preference and unpreference, identify whether the user will like the "
                f'target {self.noun} by answering "Yes." or "No.".')

    @property
    def has_author(self) -> bool:
        """True when items render their author."""
        return "author" in self.fields

    def render_list(self, items: Sequence[Item]) -> str:
        """``'"A", "B"'`` (movie) or ``'"A" written by X, "B" written by Y'`` (book)."""
        return ", ".join(self.render(i) for i in items)

    def input_text(self, liked: Sequence[Item], disliked: Sequence[Item], target: Item) -> str:
        """The TALLRec input text for liked/disliked history items and a target item."""
        return (f"User Preference: {self.render_list(liked)}\n"
                f"User Unpreference: {self.render_list(disliked)}\n"
                f"Whether the user will like the target {self.noun} {(self.render_target or self.render)(target)}?")

    def parse_input(self, text: str) -> tuple[list[Item], list[Item], Item] | None:
        """Liked items, disliked items and target item of this domain's input text; ``None`` otherwise."""
        m = re.match(r"^User Preference: (?P<liked>.*)\nUser Unpreference: (?P<disliked>.*)\n"
                     rf"Whether the user will like the target {re.escape(self.noun)} (?P<target>.*)\?$", text, re.S)
        if not m:
            return None
        target = self.parse_target(m["target"])
        if target is None:
            return None
        return self.parse_list(m["liked"]), self.parse_list(m["disliked"]), target


_DOMAINS: dict[str, DomainSpec] = {}
#: Registered domains, name -> spec (read it; add with :func:`register_domain`).
DOMAINS = MappingProxyType(_DOMAINS)


def register_domain(spec: DomainSpec) -> DomainSpec:
    """Register ``spec`` under ``spec.name``.

    Domains may share a noun; TALLRec text is then read by the first registered domain whose
    parser accepts it (:func:`detect_domain`), so keep their target forms distinct.

    Raises:
        ValueError: the name is taken already.
    """
    if spec.name in _DOMAINS:
        raise ValueError(f"a domain named {spec.name!r} is already registered")
    _DOMAINS[spec.name] = spec
    return spec


def domain_names() -> tuple[str, ...]:
    """Names of every registered domain, in registration order."""
    return tuple(_DOMAINS)


def get_domain(name: str) -> DomainSpec:
    """The registered domain ``name``.

    Raises:
        InputError: no such domain (the message lists the registered names).
    """
    if name not in _DOMAINS:
        raise InputError(f"unknown domain {name!r}", field="domain", fix=f"choose one of {', '.join(domain_names())}")
    return _DOMAINS[name]


def detect_domain(text: str) -> tuple[DomainSpec, tuple[list[Item], list[Item], Item]] | None:
    """The first registered domain whose format ``text`` is in, with the parsed items; ``None`` if none."""
    for spec in _DOMAINS.values():
        parsed = spec.parse_input(text)
        if parsed is not None:
            return spec, parsed
    return None


register_domain(DomainSpec("movie", "movie", ("title",), _quoted, _parse_quoted, _parse_quoted_target))
register_domain(DomainSpec("book", "book", ("title", "author"), _written_by, _parse_books, _parse_book_target))
register_domain(DomainSpec("book-tallrec", "book", ("title", "author"), _written_by, _parse_books,
                           _parse_tallrec_book_target, _tallrec_book_target))
register_domain(DomainSpec("game", "game", ("title",), _quoted, _parse_quoted, _parse_quoted_target))
