import json

import pytest

from recircuit.data import (
    RequestError,
    Split,
    SplitError,
    check_disjoint,
    forget_retain_split,
    random_split,
    write_tallrec_json,
)
from recircuit.errors import InputError


@pytest.fixture()
def toy_split(toy_samples):
    """A small split of whole users: 8 training users, 2 valid, 2 test."""
    return Split("toy", list(toy_samples[:8]), list(toy_samples[8:10]), list(toy_samples[10:]))


def test_tallrec_preset_reproduces_published_split_byte_for_byte(tallrec, shared_data, tmp_path):
    assert (len(tallrec.train), len(tallrec.valid), len(tallrec.test)) == (8000, 1000, 1000)
    for part in ("valid", "test"):
        out = write_tallrec_json(getattr(tallrec, part), tmp_path / f"{part}.json")
        assert out.read_bytes() == (shared_data / "tallrec-movie" / f"{part}.json").read_bytes(), part


def test_tallrec_samples_keep_history_and_ids(tallrec):
    s = tallrec.test[0]
    assert len(s.history) == 10 and len(s.history_ratings) == 10
    assert s.user_id is not None and s.item_id is not None
    assert s.label == int(json.loads(json.dumps(s.to_tallrec()))["output"] == "Yes.")


def test_random_split_is_seeded_and_disjoint(movielens):
    a = random_split(movielens, seed=1, samples_per_user=6)
    b = random_split(movielens, seed=1, samples_per_user=6)
    c = random_split(movielens, seed=2, samples_per_user=6)
    assert [s.uid for s in a.train] == [s.uid for s in b.train]
    assert [s.uid for s in a.train] != [s.uid for s in c.train]
    check_disjoint(train=a.train, valid=a.valid, test=a.test)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("level", ["user", "interaction"])
def test_forget_retain_never_overlap(tallrec, level):
    fr = forget_retain_split(tallrec, level=level, fraction=0.2, seed=3)
    check_disjoint(forget=fr.forget, retain=fr.retain, valid=tallrec.valid, test=tallrec.test)
    assert len(fr.forget) + len(fr.retain) == len(tallrec.train)
    if level == "user":
        forgotten = set(fr.forget_users)
        assert all(s.user_id not in forgotten for s in fr.retain)
        users = {s.user_id for s in tallrec.train}
        assert len(forgotten) == round(0.2 * len(users))
    else:
        assert len(fr.forget) == round(0.2 * len(tallrec.train))


def test_forget_by_explicit_ids(tallrec):
    user = tallrec.train[0].user_id
    fr = forget_retain_split(tallrec, level="user", user_ids=[user])
    assert fr.forget_users == [user]
    item = tallrec.train[5].item_id
    fi = forget_retain_split(tallrec, level="interaction", item_ids=[item])
    assert fi.forget and all(s.item_id == item for s in fi.forget)


def test_bad_forget_requests_raise(tallrec):
    with pytest.raises(SplitError, match="forget set is empty"):
        forget_retain_split(tallrec, level="user", fraction=0.001)
    with pytest.raises(SplitError, match="whole training set"):
        forget_retain_split(tallrec, level="interaction", fraction=0.99999)
    with pytest.raises(SplitError, match="no training samples"):
        forget_retain_split(tallrec, level="user", user_ids=[10**6])
    with pytest.raises(RequestError, match="overlap"):
        check_disjoint(forget=tallrec.test[:3], test=tallrec.test)


@pytest.mark.parametrize("fraction", [1.5, -0.2, 0.0, 1.0, float("nan"), "0.1", True, None])
def test_forget_fraction_outside_0_1_names_the_field_and_range(toy_split, fraction):
    with pytest.raises(InputError, match=r"strictly between 0 and 1") as err:
        forget_retain_split(toy_split, level="user", fraction=fraction)
    assert err.value.field == "forget_fraction" and "(0, 1)" in str(err.value)
    assert "numpy" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(level="users"), "level"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(user_ids=["u1"]), "user_ids"),
        (dict(user_ids=[]), "user_ids"),
        (dict(user_ids=7), "user_ids"),
        (dict(item_ids=[100]), "item_ids"),  # item ids at user level
        (dict(level="interaction", item_ids=[1.5]), "item_ids"),
    ],
)
def test_other_bad_arguments_name_their_field(toy_split, kwargs, field):
    with pytest.raises(SplitError) as err:
        forget_retain_split(toy_split, **{"level": "user", **kwargs})
    assert err.value.field == field


def test_forget_retain_split_checks_the_request_against_valid_and_test(toy_split):
    import dataclasses

    leaky = dataclasses.replace(toy_split, test=toy_split.test + toy_split.train[:1])
    with pytest.raises(RequestError, match="in the test set"):
        forget_retain_split(leaky, level="interaction", user_ids=[toy_split.train[0].user_id])
    leaky = dataclasses.replace(toy_split, valid=toy_split.valid + toy_split.train[-1:])
    with pytest.raises(RequestError, match="held-out samples were trained on"):
        forget_retain_split(leaky, level="user", fraction=0.5)


def test_cap_per_user_spreads_the_pool_over_users(tallrec):
    from recircuit.data import cap_per_user

    pool = cap_per_user(tallrec.train, per_user=4, limit=40)
    assert len(pool) == 40 and len({s.user_id for s in pool}) == 10
    assert len({s.user_id for s in tallrec.train[:40]}) == 1


@pytest.mark.parametrize(
    ("preset", "kwargs", "field"),
    [
        ("movies", {}, "preset"),
        ("tallrec", {"seed": 1}, "seed"),  # tallrec is not seeded
        ("tallrec", {"history_len": 0}, "history_len"),
        ("tallrec", {"n_windows": 2.5}, "n_windows"),
        ("random", {"seed": -1}, "seed"),
        ("random", {"samples_per_user": 2}, "samples_per_user"),
        ("random", {"valid_frac": 1.2}, "valid_frac"),
        ("random", {"test_frac": float("nan")}, "test_frac"),
        ("random", {"valid_frac": 0.5, "test_frac": 0.5}, "valid_frac/test_frac"),
    ],
)
def test_build_split_checks_its_parameters_before_reading_data(tmp_path, preset, kwargs, field):
    from recircuit.data import build_split

    # the folder does not exist: reaching the data would raise DataFileMissing instead
    with pytest.raises(SplitError) as err:
        build_split(preset, data_dir=tmp_path / "absent", **kwargs)
    assert err.value.field == field and "\n" not in str(err.value)


def test_random_split_and_cap_per_user_check_arguments(toy_samples, movielens):
    from recircuit.data import cap_per_user

    with pytest.raises(SplitError, match="history_len must be an integer >= 1"):
        random_split(movielens, history_len=-3)
    with pytest.raises(SplitError) as err:
        cap_per_user(toy_samples, per_user=0)
    assert err.value.field == "per_user"
    with pytest.raises(SplitError) as err:
        cap_per_user(toy_samples, per_user=2, limit=0)
    assert err.value.field == "limit"
    assert len(cap_per_user(toy_samples, per_user=1, limit=None)) == len({s.user_id for s in toy_samples})
