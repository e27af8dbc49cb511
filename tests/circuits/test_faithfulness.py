from recircuit.circuits import corruption_effect


def test_a_corruption_that_lowers_the_metric_enough_is_fine():
    assert corruption_effect(2.0, 0.5, "label_flip") is None
    assert corruption_effect(0.35, 0.20, min_gap=0.1) is None


def test_a_corruption_that_moves_the_metric_the_wrong_way_is_named():
    note = corruption_effect(0.497, 0.551, "label_flip")        # the zero-shot SmolLM2 case
    assert note is not None and "wrong way" in note and "label_flip" in note


def test_a_corruption_that_barely_moves_the_metric_is_named():
    note = corruption_effect(0.52, 0.50, "target_swap")
    assert note is not None and "only 0.02" in note and "not meaningful" in note


def test_curve_round_trips_through_json():
    import json

    from recircuit.circuits import FaithfulnessCurve

    c = FaithfulnessCurve([0.1, 0.5, 1.0], [7, 35, 70], [0.2, 0.7, 1.0], 1.5, 0.25)
    back = FaithfulnessCurve.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c and back.cpr == c.cpr
