import json

import pytest

from recircuit.data import DataFormatError, load_tallrec_json, write_tallrec_json


def test_roundtrip(toy_samples, tmp_path):
    p = write_tallrec_json(toy_samples, tmp_path / "x.json")
    back = load_tallrec_json(p)
    assert [s.to_tallrec() for s in back] == [s.to_tallrec() for s in toy_samples]
    assert back[3].uid == "x:3" and back[3].user_id is None


def test_loads_published_file(shared_data):
    test = load_tallrec_json(shared_data / "tallrec-movie" / "test.json")
    assert len(test) == 1000 and {s.output for s in test} == {"Yes.", "No."}


@pytest.mark.parametrize(
    "content, match",
    [("", "is empty"), ("{", "line 1: invalid JSON"), ("[]", "non-empty JSON list"),
     (json.dumps([{"input": "x"}]), "record 0: needs keys"),
     (json.dumps([{"instruction": "i", "input": "x", "output": "Maybe."}]), "record 0: output")],
)
def test_bad_files(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DataFormatError, match=match):
        load_tallrec_json(p)
