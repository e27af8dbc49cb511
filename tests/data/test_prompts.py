import pytest

from recircuit.data import INSTRUCTION, make_sample
from recircuit.data.prompts import label_of


def test_label_threshold_is_strictly_above_three():
    assert [label_of(r) for r in (1, 2, 3, 3.5, 4, 5)] == ["No.", "No.", "No.", "Yes.", "Yes.", "Yes."]


def test_make_sample_splits_history_by_rating_and_keeps_ids():
    s = make_sample(7, [(1, "A (1995)", 5), (2, "C (1994)", 2), (3, "B (1996)", 4)], (9, "D (1995)", 1), timestamp=42)
    assert s.input == (
        'User Preference: "A (1995)", "B (1996)"\n'
        'User Unpreference: "C (1994)"\n'
        'Whether the user will like the target movie "D (1995)"?'
    )
    assert s.output == "No." and s.label == 0 and s.answer == " No."
    assert (s.user_id, s.item_id, s.history, s.history_ratings) == (7, 9, (1, 2, 3), (5.0, 2.0, 4.0))
    assert s.uid == "u7:i9:t42"
    assert s.prompt.startswith("Below is an instruction") and INSTRUCTION in s.prompt
    assert s.prompt.endswith("### Response:")


def test_sample_keeps_structured_history_and_target():
    s = make_sample(7, [(1, "A (1995)", 5), (2, "C (1994)", 2), (3, "B (1996)", 4)], (9, "D (1995)", 1))
    assert (s.liked, s.disliked, s.target) == (("A (1995)", "B (1996)"), ("C (1994)",), "D (1995)")
    assert (s.liked_ids, s.disliked_ids, s.target_id) == ((1, 3), (2,), 9)
    assert s.structured


def test_sample_from_bare_text_parses_titles_once_and_has_no_ids():
    from recircuit.data.prompts import Sample, build_input

    text = build_input(["A (1995)", "B, The (1996)"], [], "D (1995)")
    s = Sample(INSTRUCTION, text, "Yes.", uid="test:0")   # how TALLRec JSON is loaded
    assert (s.liked, s.disliked, s.target) == (("A (1995)", "B, The (1996)"), (), "D (1995)")
    assert s.liked_ids is None and s.disliked_ids is None
    other = Sample(INSTRUCTION, "not a movie prompt", "No.")
    assert not other.structured and other.liked is None


def test_counterfactual_copies_rerender_and_keep_identity():
    s = make_sample(7, [(1, "A (1995)", 5), (2, "C (1994)", 2)], (9, "D (1995)", 1), timestamp=3)
    h = s.with_history(["X (1990)"], ["Y (1991)"], [11], [12])
    assert h.input == 'User Preference: "X (1990)"\nUser Unpreference: "Y (1991)"\n' \
                      'Whether the user will like the target movie "D (1995)"?'
    assert (h.liked_ids, h.disliked_ids, h.uid, h.user_id, h.output) == ((11,), (12,), s.uid, 7, s.output)
    t = s.with_target("Z (1999)", 42)
    assert t.target == "Z (1999)" and t.item_id == 42 and t.liked == s.liked and t.input.endswith('"Z (1999)"?')
    with pytest.raises(ValueError, match="liked_ids"):
        s.with_history(["X (1990)"], [], [1, 2], None)
