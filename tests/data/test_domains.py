"""Domain specs: rendering, parsing back, detection, the registry; Samples of every domain."""

from __future__ import annotations

import pytest

from recircuit.data import INSTRUCTION, Item, Sample, get_domain, make_sample, register_domain
from recircuit.data.domains import DomainSpec, detect_domain, domain_names
from recircuit.data.prompts import build_input
from recircuit.errors import InputError

BOOKS = [Item("The Glass Orchard", "Ada Vell"), Item("Salt Roads", "Moss, R."), Item("Night Ferry")]


def test_movie_rendering_is_tallrecs_byte_for_byte():
    movie = get_domain("movie")
    liked, disliked = [Item("A (1995)"), Item("B, The (1996)")], [Item("C (1994)")]
    assert movie.input_text(liked, disliked, Item("D (1995)")) == build_input(["A (1995)", "B, The (1996)"], ["C (1994)"], "D (1995)")
    assert movie.instruction == INSTRUCTION == ("Given the user's preference and unpreference, identify whether the user "
                                                'will like the target movie by answering "Yes." or "No.".')


@pytest.mark.parametrize("name", ["movie", "book", "book-tallrec", "game"])
def test_every_domain_parses_back_what_it_renders(name):
    spec = get_domain(name)
    items = BOOKS if spec.has_author else [Item(i.title) for i in BOOKS]
    text = spec.input_text(items[:2], items[2:], items[0])
    assert spec.parse_input(text) == (items[:2], items[2:], items[0])
    found = detect_domain(text)
    assert found is not None and found[0].name == name
    assert f"target {spec.noun} " in text and spec.noun in spec.instruction


def test_book_rendering_and_tallrecs_published_target_form():
    book = get_domain("book")
    assert book.render(BOOKS[0]) == '"The Glass Orchard" written by Ada Vell'
    assert book.render(BOOKS[2]) == '"Night Ferry"'                          # no author: no "written by"
    published = ('User Preference: "The Bean Plot" written by B. King, "Sula Road" written by T. M.\nUser Unpreference: '
                 '\nWhether the user will like the target book ""Epitaph for a Pear" written by D. Mas"?')
    s = Sample("instr", published, "No.")
    assert s.domain == "book-tallrec" and s.target_item == Item("Epitaph for a Pear", "D. Mas")
    assert s.liked_authors == ("B. King", "T. M.") and s.disliked == ()
    assert s.with_items(s.disliked_items, s.liked_items).input.endswith('""Epitaph for a Pear" written by D. Mas"?')


def test_book_samples_keep_authors_through_counterfactuals():
    s = make_sample(5, [(1, "Alpha", 9), (2, "Beta", 3)], (3, "Gamma", 8), domain="book", like_threshold=6,
                    authors={1: "A. One", 2: "B. Two", 3: "C. Three"})
    assert s.instruction == get_domain("book").instruction and s.output == "Yes."
    assert s.input == ('User Preference: "Alpha" written by A. One\nUser Unpreference: "Beta" written by B. Two\n'
                       'Whether the user will like the target book "Gamma" written by C. Three?')
    flipped = s.with_items(s.disliked_items, s.liked_items)
    assert (flipped.liked_items, flipped.disliked_items) == (s.disliked_items, s.liked_items)
    assert flipped.liked_ids == (2,) and flipped.uid == s.uid
    t = s.with_target_item(Item("Delta", "D. Four", 4))
    assert t.input.endswith('"Delta" written by D. Four?') and t.item_id == 4 and t.target_author == "D. Four"
    with pytest.raises(ValueError, match="authors"):
        s.with_history(["Beta"], ["Alpha"])                  # titles alone would lose the authors
    assert Sample(s.instruction, s.input, s.output).liked_items == (Item("Alpha", "A. One"),)


def test_like_threshold_is_a_parameter():
    hist = [(1, "A", 7), (2, "B", 6)]
    s = make_sample(1, hist, (3, "C", 7), domain="game", like_threshold=6)
    assert (s.liked, s.disliked, s.output) == (("A",), ("B",), "Yes.")
    assert make_sample(1, hist, (3, "C", 7), like_threshold=7).output == "No."


def test_registry_names_its_domains_and_refuses_duplicates():
    with pytest.raises(InputError, match="movie, book"):
        get_domain("song")
    assert domain_names()[:3] == ("movie", "book", "book-tallrec")
    with pytest.raises(ValueError, match="already registered"):
        register_domain(DomainSpec("movie", "film", ("title",), str, list, lambda t: None))
