"""vase.methods: the one parser of NAME=VALUE and of `method:params`, and the one label format."""

from __future__ import annotations

import pytest

from vase.methods import MethodSpec, format_method, method_label, parse_assignments, parse_value
from vase.policies import InvalidParameter, policy_class


def test_values_are_json_when_they_parse():
    assert parse_value("16") == 16 and parse_value("false") is False and parse_value("null") is None
    assert parse_value("0.5") == 0.5 and parse_value("range") == "range"
    assert parse_assignments(["n_large=16", "smoothing=false", "metric=l2"], param="param") == {
        "n_large": 16, "smoothing": False, "metric": "l2"}


@pytest.mark.parametrize("pair", ["n_large", "=3"])
def test_a_pair_without_a_name_or_value_names_the_parameter(pair):
    with pytest.raises(InvalidParameter, match=r"^param: expected NAME=VALUE") as error:
        parse_assignments([pair], param="param")
    assert error.value.param == "param"
    with pytest.raises(InvalidParameter, match=r"^methods: .* in 'vase:"):
        MethodSpec.parse(f"vase:{pair}")


def test_labels_sort_parameters_and_show_only_changed_ones():
    assert format_method("vase") == "vase" and format_method("vase", {"b": 1, "a": True}) == "vase:a=True,b=1"
    defaults = policy_class("vase").param_defaults()
    assert method_label("vase", defaults) == "vase"
    assert method_label("vase", {**defaults, "n_large": 8}) == "vase:n_large=8"
    assert method_label("no-such-method", {"x": 1}) == "no-such-method:x=1"
    assert MethodSpec.parse("vase:n_large=8,smoothing=false").label == "vase:n_large=8,smoothing=False"
