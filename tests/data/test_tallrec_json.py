import json

import pytest

from recircuit.data import DataFormatError, load_tallrec_json, write_tallrec_json
from recircuit.errors import InputError


def test_roundtrip(toy_samples, tmp_path):
    p = write_tallrec_json(toy_samples, tmp_path / "x.json")
    back = load_tallrec_json(p)
    assert [s.to_tallrec() for s in back] == [s.to_tallrec() for s in toy_samples]
    assert back[3].uid == "x:3" and back[3].user_id is None


def test_loads_published_file(shared_data):
    test = load_tallrec_json(shared_data / "tallrec-movie" / "test.json")
    assert len(test) == 1000 and {s.output for s in test} == {"Yes.", "No."}


def _rec(**kw):
    return {"instruction": "i", "input": "x", "output": "Yes.", **kw}


@pytest.mark.parametrize(
    "content, match",
    [("", "is empty"), ("{", r"bad.json:1: invalid JSON"), ("[]", "non-empty JSON list"),
     ('{"a": 1}', "non-empty JSON list of records, got an object"),
     ('[\n  {"input": "x",\n  }\n]', r"bad.json:3: invalid JSON at column 3"),
     (json.dumps([{"input": "x"}]), r"field '\[0\]'\): record 0: needs keys"),
     (json.dumps([_rec(), 5]), r"field '\[1\]'\): record 1 is an integer, not an object"),
     (json.dumps([_rec(output="Maybe.")]), "record 0: output is 'Maybe.'"),
     (json.dumps([_rec(), _rec(output=1)]), r"field '\[1\].output'\): record 1: output is an integer 1; "
                                            r'allowed values are the strings "Yes." and "No."'),
     (json.dumps([_rec(output=None)]), r"output is null null"),
     (json.dumps([_rec(output=True)]), r"output is a boolean true"),
     (json.dumps([_rec(input=["a"])]), r"field '\[0\].input'\): record 0: input is a list, not a string"),
     (json.dumps([_rec(instruction=3.5)]), r"record 0: instruction is a number, not a string")],
)
def test_bad_files(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DataFormatError, match=match) as err:
        load_tallrec_json(p)
    assert isinstance(err.value, InputError) and str(p) in str(err.value) and "\n" not in str(err.value)


def test_invalid_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_bytes(json.dumps([_rec(), _rec()], indent=4).encode().replace(b'"x"', b'"x\xff"', 1))
    # line 4 is '        "input": "x\xff",': the bad byte is the 20th
    with pytest.raises(DataFormatError, match=r"bad.json:4: byte 0xff at column 20 is not valid utf-8"):
        load_tallrec_json(p)


def test_bom_and_crlf_are_accepted(tmp_path):
    p = tmp_path / "win.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps([_rec(output="No. ")], indent=4).replace("\n", "\r\n").encode())
    (s,) = load_tallrec_json(p)
    assert s.output == "No." and s.uid == "win:0"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.json: file is missing") as err:
        load_tallrec_json(tmp_path / "nope.json")
    assert isinstance(err.value, InputError)
