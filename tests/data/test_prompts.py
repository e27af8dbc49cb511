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
