"""Streams of deletion requests on the tiny model: the draw, the chain of audit records, resuming."""

import dataclasses
import json

import pytest

from recircuit.errors import InputError
from recircuit.pipeline import PipelineConfig, prepare_data
from recircuit.streams import StreamConfig, chain, cumulative, run_stream, stream_requests
from recircuit.unlearn import method_config


@pytest.fixture(scope="module")
def tiny_cfg(shared_data):
    cfg = PipelineConfig.tiny(data_dir=str(shared_data / "ml-100k"))
    return dataclasses.replace(cfg, circuit=dataclasses.replace(cfg.circuit, enabled=False),
                               methods={"ga": cfg.methods.get("ga") or method_config("ga"),
                                        "sisa": method_config("sisa", k=2, shard_lr=3e-3)})


def test_requests_are_disjoint_users_and_retain_shrinks(tiny_cfg):
    data = prepare_data(tiny_cfg)
    reqs = stream_requests(data, StreamConfig(n_requests=3, users_per_request=1, seed=2))
    users = [tuple(r.params["users"]) for r in reqs]
    assert len(set(users)) == 3 and all(len(u) == 1 for u in users)
    for i, r in enumerate(reqs):
        gone = {u for us in users[: i + 1] for u in us}
        assert {s.user_id for s in r.forget} == set(users[i])
        assert r.retain == [s for s in data.split.train if s.user_id not in gone]
        assert len(cumulative(reqs, i).forget) == sum(len(x.forget) for x in reqs[: i + 1])
    assert stream_requests(data, StreamConfig(3, 1, seed=2))[1].forget == reqs[1].forget      # seeded
    n_users = len({s.user_id for s in data.split.train})
    with pytest.raises(InputError, match="needs more than"):
        stream_requests(data, StreamConfig(n_requests=n_users, users_per_request=1))
    with pytest.raises(InputError, match="n_requests"):
        StreamConfig(n_requests=0)


def test_chain_links_each_record_to_the_previous():
    records: list[dict] = []
    a = chain(records, {"request": 0, "after": "x"})
    b = chain(records, {"request": 1, "before": "x"})
    assert a["previous"] is None and b["previous"] == a["record_hash"] and len(records) == 2
    assert a["record_hash"] != b["record_hash"]


def test_a_stream_runs_every_method_chains_models_and_resumes(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    stream = StreamConfig(n_requests=2, users_per_request=1, seed=0, methods=("ga", "sisa"))
    res = run_stream(tiny_cfg, stream, tmp_path / "out", progress=False)
    table = res.table
    assert set(table.index.get_level_values("method")) == {"retrain", "ga", "sisa"}
    assert list(table.loc["ga"].index) == [0, 1]
    assert (table.loc["ga", "n_forgotten"].diff().dropna() > 0).all()     # the forget set accumulates
    for name in ("ga", "sisa"):
        r0, r1 = res.audit[name]
        assert r1["previous"] == r0["record_hash"]
        assert r1["before"] == r0["after"]                 # request 1 starts from request 0's model
    assert res.audit["sisa"][0]["before"] != res.audit["sisa"][0]["after"]
    assert (tmp_path / "out" / "stream.html").is_file() and (tmp_path / "out" / "stream" / "ga.json").is_file()
    # a finished stream is read back, not run again
    import recircuit.unlearn as U

    monkeypatch.setattr(U, "get_method", lambda *a, **k: pytest.fail("nothing should run again"))
    again = run_stream(tiny_cfg, stream, tmp_path / "out", progress=False)
    assert again.table.equals(table)


def test_the_stream_command_prints_rows_and_refuses_bad_input_in_one_line(shared_data, tmp_path, monkeypatch,
                                                                          capsys):
    from recircuit.cli import main

    rc = main(["stream", "--model", "tiny", "--n-requests", "0", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "n_requests" in err and not (tmp_path / "bad").exists()
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    rc = main(["stream", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--n-requests", "1",
               "--methods", "ga", "--out", str(tmp_path / "s"), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and {r["method"] for r in rows} == {"retrain", "ga"} and all(r["request"] == 0 for r in rows)
    assert (tmp_path / "s" / "stream.json").is_file()
