"""BookCrossing and generic CSV builders, the like-threshold rule and DataSource (with TALLRec JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recircuit.data import DataSource, like_threshold_for, load_bookcrossing, load_interactions_csv
from recircuit.data.ratings import DataFormatError
from recircuit.data.splits import tallrec_split
from recircuit.errors import InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GAMES = {"user": "player", "item": "game_id", "rating": "stars", "timestamp": "played_at", "item_id": "id", "title": "name"}


def test_like_threshold_rule():
    assert like_threshold_for([1, 5, 3]) == 3.0 and like_threshold_for([1, 10]) == 6.0 and like_threshold_for([0, 1]) == 0.5
    assert like_threshold_for([1, 5], scale="1-10") == 6.0 and like_threshold_for([1, 5], threshold=4) == 4.0
    with pytest.raises(InputError, match="like_threshold"):
        like_threshold_for([1, 100])
    with pytest.raises(InputError, match="rating_scale"):
        like_threshold_for([1], scale="1-7")


def test_bookcrossing_drops_implicit_zeros_and_unknown_isbns_and_likes_seven_and_up():
    data = load_bookcrossing(FIXTURES / "bookcrossing")
    lines = (FIXTURES / "bookcrossing" / "BX-Book-Ratings.csv").read_text().splitlines()[1:]
    explicit_known = [ln for ln in lines if not ln.endswith('"0"') and "0999999999" not in ln]
    assert len(data.interactions) == len(explicit_known) and (data.interactions["rating"] > 0).all()
    assert data.domain == "book" and data.like_threshold == 6.0 and data.uid_tag == "n"
    isbn = data.item_keys[int(data.interactions["item"][0])]
    assert isbn == lines[[not ln.endswith('"0"') for ln in lines].index(True)].split(";")[1].strip('"')
    split = tallrec_split(data, history_len=3)
    s = split.train[0]
    assert s.domain == "book" and all(a for a in s.liked_authors + s.disliked_authors)
    assert all((r > 6) == (i in s.liked_ids) for i, r in zip(s.history, s.history_ratings))
    assert s.uid.startswith(f"u{s.user_id}:i") and ":n" in s.uid


def test_bookcrossing_reads_comma_separated_files_and_names_a_bad_line(tmp_path):
    (tmp_path / "BX-Books.csv").write_text('ISBN,Book-Title,Book-Author\n0001,"Tea, Twice",Ana Roe\n0002,Moth,Bo Li\n')
    (tmp_path / "BX-Book-Ratings.csv").write_text("User-ID,ISBN,Book-Rating\n1,0001,8\n1,0002,3\n")
    data = load_bookcrossing(tmp_path)
    assert data.titles[data.interactions["item"][0]] == "Tea, Twice" and data.authors[1] == "Ana Roe"
    (tmp_path / "BX-Book-Ratings.csv").write_text("User-ID,ISBN,Book-Rating\n1,0001,8\n1,0002,great\n")
    with pytest.raises(DataFormatError) as err:
        load_bookcrossing(tmp_path)
    assert err.value.line == 3 and err.value.field == "Book-Rating" and "BX-Book-Ratings.csv" in str(err.value)


def test_generic_csv_with_named_columns_orders_by_timestamp(tmp_path):
    data = load_interactions_csv(FIXTURES / "games" / "plays.csv", FIXTURES / "games" / "games.csv", GAMES, domain="game")
    assert data.domain == "game" and data.like_threshold == 3.0 and data.uid_tag == "t" and data.authors is None
    s = tallrec_split(data, history_len=3).train[0]
    assert "target game" in s.instruction and s.uid.startswith("u") and s.user_id == 1
    rows = data.interactions[data.interactions["user"] == s.user_id]
    assert list(rows["timestamp"]) == sorted(rows["timestamp"], reverse=True)     # file is newest first ...
    first = rows.sort_values("timestamp")["item"].tolist()
    assert list(s.history) == first[:3]                                             # ... the history is oldest first
    # an order column instead of timestamps; string ids kept in uids
    (tmp_path / "i.csv").write_text("item,title\nx1,Alpha\nx2,Beta\nx3,Gamma\n")
    (tmp_path / "r.csv").write_text("user;item;rating;order\nu;x3;5;3\nu;x1;1;1\nu;x2;4;2\n")
    d = load_interactions_csv(tmp_path / "r.csv", tmp_path / "i.csv", {"order": "order"})
    s = tallrec_split(d, history_len=2).test[0]
    assert (s.liked, s.disliked, s.target, s.uid) == (("Beta",), ("Alpha",), "Gamma", "uu:ix3:o3")


@pytest.mark.parametrize("ratings, items, columns, field, line", [
    ("user,item\n1,a\n", "item,title\na,A\n", None, "rating", 1),
    ("user,item,rating\n1,a,5\n1,zz,4\n", "item,title\na,A\n", None, "item", 3),
    ("user,item,rating\n1,a,5\n", "item,title\na,A\na,B\n", None, "item", 3),
    ("user,item,rating\n1,a,5\n", "item,title\na,\n", None, "title", 2),
    ("user,item,rating,when\n1,a,5,yesterday\n", "item,title\na,A\n", {"timestamp": "when"}, "when", 2),
])
def test_generic_csv_refuses_bad_files_naming_file_line_and_field(tmp_path, ratings, items, columns, field, line):
    (tmp_path / "r.csv").write_text(ratings)
    (tmp_path / "i.csv").write_text(items)
    with pytest.raises(DataFormatError) as err:
        load_interactions_csv(tmp_path / "r.csv", tmp_path / "i.csv", columns)
    assert (err.value.field, err.value.line) == (field, line) and err.value.fix


def test_data_source_round_trips_and_refuses_bad_settings():
    src = DataSource("csv", path="r.csv", items="i.csv", domain="game", columns={"user": "p"}, rating_scale="1-10")
    assert DataSource.from_dict(json.loads(json.dumps(src.to_dict()))) == src
    assert DataSource().to_dict() == {"format": "movielens"}
    for bad, field in [({"format": "xml"}, "format"), ({"format": "csv", "path": "r"}, "items"),
                       ({"format": "bookcrossing"}, "path"), ({"format": "movielens", "oops": 1}, "oops"),
                       ({"format": "bookcrossing", "path": "p", "domain": "movie"}, "domain"),
                       ({"format": "movielens", "history_len": 0}, "history_len")]:
        with pytest.raises(InputError) as err:
            DataSource.from_dict(bad)
        assert err.value.field == field


def test_tallrec_json_source_splits_a_folder_or_one_file_and_gives_users(tmp_path):
    src = DataSource("tallrec-json", path=str(FIXTURES / "book_tallrec"))
    split = src.split()
    assert [len(p) for p in (split.train, split.valid, split.test)] == [24, 8, 8]
    assert all(s.domain == "book" and s.structured for s in split.train)
    users = [s.user_id for p in (split.train, split.valid, split.test) for s in p]
    assert len(set(users)) == len(users)                         # each record its own user
    records = json.loads((FIXTURES / "book_tallrec" / "train.json").read_text())
    records[0]["user_id"] = 7
    records[1]["user_id"] = 7
    (tmp_path / "all.json").write_text(json.dumps(records))
    one = DataSource("tallrec-json", path=str(tmp_path / "all.json"))
    split = one.split()
    assert (len(split.train), len(split.valid), len(split.test)) == (19, 2, 3)
    assert split.train[0].user_id == split.train[1].user_id == 7 and split.train[2].user_id != 7
    assert len(one.samples("valid")) == 24                       # one file is scored whole
    cat = src.catalogue()
    assert cat.domain == "book" and all(i.author and i.id is None for i in cat.items) and cat.interactions is None


def test_ids_that_are_not_canonical_integers_are_kept_apart():
    """``"007"`` and ``"7"`` are two items, and an ISBN keeps its leading zero."""
    from recircuit.data.interactions_csv import _Ids

    ids = _Ids(["007", "7", "0345339703"])
    assert len(set(ids.to_int.values())) == 3 and ids.keys is not None
    assert set(ids.keys.values()) == {"007", "7", "0345339703"}
    plain = _Ids(["3", "12", "3"])
    assert plain.to_int == {"3": 3, "12": 12} and plain.keys is None


def test_an_inferred_rating_scale_is_said_out_loud(caplog):
    """Without a threshold or scale the scale is guessed from the largest rating, and a warning says which."""
    import logging

    from recircuit.data.ratings import like_threshold_for

    with caplog.at_level(logging.WARNING, logger="recircuit.data.ratings"):
        assert like_threshold_for([2, 4, 5]) == 3.0
    assert "1-5 scale is assumed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recircuit.data.ratings"):
        assert like_threshold_for([2, 4, 5], scale="1-10") == 6.0
    assert caplog.text == ""
