"""Every registered corruption on book and game samples, drawing from the same data set's catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from recircuit.circuits.corruptions import corruption_for, corruption_names, get_corruption
from recircuit.data import DataSource, Sample
from recircuit.errors import InputError
from recircuit.models import tiny_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BX = DataSource("bookcrossing", path=str(FIXTURES / "bookcrossing"), history_len=3)
JSON = DataSource("tallrec-json", path=str(FIXTURES / "book_tallrec"))
GAMES = DataSource("csv", path=str(FIXTURES / "games" / "plays.csv"), items=str(FIXTURES / "games" / "games.csv"),
                   domain="game", history_len=3, columns={"user": "player", "item": "game_id", "rating": "stars",
                                                          "timestamp": "played_at", "item_id": "id", "title": "name"})


def _check(clean: list[Sample], corrupted: list[Sample], catalogue_keys: set) -> int:
    """Structured fields and text agree, the label and uid stay, items come from the data set; returns #changed."""
    changed = 0
    for a, b in zip(clean, corrupted):
        assert b.input == b.spec.input_text(b.liked_items, b.disliked_items, b.target_item)
        assert Sample(b.instruction, b.input, b.output).liked_items == tuple(i.__class__(i.title, i.author)
                                                                              for i in b.liked_items)
        assert (b.uid, b.output, b.domain, b.instruction) == (a.uid, a.output, a.domain, a.instruction)
        shown = {i.key for i in (*b.liked_items, *b.disliked_items, b.target_item)}
        assert shown <= catalogue_keys
        changed += b.input != a.input
    return changed


@pytest.mark.parametrize("source", [BX, JSON, GAMES], ids=["bookcrossing", "tallrec-json", "games-csv"])
@pytest.mark.parametrize("name", corruption_names())
def test_every_corruption_works_on_every_domain(name, source):
    samples = source.split().train[:8]
    tok = tiny_tokenizer()
    if name == "ppr" and source.format == "tallrec-json":
        with pytest.raises(InputError, match="interactions"):
            corruption_for(name, tok, source=source)
        return
    corrupted = corruption_for(name, tok, source=source)(samples)
    keys = {i.key for i in source.catalogue().items}
    assert _check(samples, corrupted, keys) >= 1
    for a, b in zip(samples, corrupted):
        if name not in ("label_flip", "user_swap"):    # length-matched replacements: the same token count
            assert len(tok(b.prompt)["input_ids"]) == len(tok(a.prompt)["input_ids"])
        if name == "label_flip":
            assert (b.liked_items, b.disliked_items) == (a.disliked_items, a.liked_items)
        if name == "target_swap":
            assert (b.liked_items, b.disliked_items) == (a.liked_items, a.disliked_items)
        if name == "user_swap":     # another user's history, the same target
            assert b.target_item == a.target_item


def test_target_swap_draws_book_and_author_together_from_the_catalogue():
    cat = BX.catalogue()
    samples = BX.split().train[:10]
    out = get_corruption("target_swap", titles=None, catalogue=cat, seed=0)(samples)   # no tokenizer: char length
    by_title = {i.title: i for i in cat.items}
    swapped = [b for a, b in zip(samples, out) if b.target != a.target]
    assert swapped
    for b in swapped:
        assert by_title[b.target].author == b.target_author and by_title[b.target].id == b.item_id


def test_target_swap_on_samples_in_tallrec_published_book_format():
    """TALLRec's published book data quotes the target once more: such samples are read as that
    domain, swapped from the data set's catalogue, and keep their token count."""
    from recircuit.data.domains import get_domain

    spec = get_domain("book-tallrec")
    tok = tiny_tokenizer()
    published = []
    for s in BX.split().train[:10]:
        text = spec.input_text(s.liked_items, s.disliked_items, s.target_item)
        published.append(Sample(spec.instruction, text, s.output))
    assert all(p.domain == "book-tallrec" for p in published)
    out = corruption_for("target_swap", tok, source=BX)(published)
    assert sum(a.target_item.key != b.target_item.key for a, b in zip(published, out)) >= 1
    for a, b in zip(published, out):
        assert len(tok(b.prompt)["input_ids"]) == len(tok(a.prompt)["input_ids"])
