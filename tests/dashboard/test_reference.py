"""vase.reference: the project's copy of the paper's figures and the name mapping."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from vase.reference import (
    METHOD_TO_PAPER,
    paper_accuracy,
    paper_accuracy_by_budget,
    paper_model,
    paper_tables,
    paper_task,
    paper_throughput,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "paper_tables.json"


def test_package_data_is_shipped():
    text = resources.files("vase.reference").joinpath("paper_tables.json").read_text()
    assert json.loads(text)["accuracy"]["Qwen3-4B"]["AIME25"]["vase-attnv"] == 59.17


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared reference beside this checkout")
def test_copy_matches_the_shared_reference():
    assert paper_tables() == json.loads(SHARED.read_text())


def test_names_are_mapped_to_ours():
    acc = paper_accuracy("Qwen/Qwen3-4B", "aime25")
    assert acc["vase"] == 59.17 and acc["vase-dkv"] == 57.29 and acc["full"] == 66.41
    assert "vase-attnv" not in acc
    assert acc["seerattention-r"] == 58.59  # not a project method: keeps the paper's name
    assert METHOD_TO_PAPER["vase"] == "vase-attnv"
    assert paper_accuracy("Qwen3-14B", "math500")["vase"] == 85.42


def test_model_and_task_matching():
    assert paper_model("Qwen/Qwen3-14B") == "Qwen3-14B"
    assert paper_model("qwen3-4b") == "Qwen3-4B"
    assert paper_model("Qwen/Qwen3-4B-Instruct-2507") == "Qwen3-4B"
    assert paper_model("embedded:smollm2-135m-instruct") is None
    assert paper_model("Qwen/Qwen3-40B") is None
    assert paper_task("gpqa-diamond") == "GPQA-Diamond"
    assert paper_task("arith-chain") is None
    assert paper_accuracy("embedded:smollm2-135m-instruct", "arith-chain") == {}
    assert paper_accuracy("Qwen/Qwen3-4B", "arith-chain") == {}


def test_by_budget_and_throughput():
    sweep = paper_accuracy_by_budget("Qwen/Qwen3-14B", "aime26")
    assert sorted(sweep) == [2048, 4096, 6144]
    assert sweep[2048]["vase"] == 53.96 and sweep[6144]["vase-dkv"] == 75.42
    # the main table adds its methods at the default budget
    assert sweep[4096]["seerattention-r"] == 65.62
    main_only = paper_accuracy_by_budget("Qwen/Qwen3-4B", "aime25")
    assert list(main_only) == [4096] and main_only[4096]["vase"] == 59.17
    tp = paper_throughput("Qwen/Qwen3-14B")
    assert tp["output_len=16384"][4096]["vase"]["tokens_per_s"] == 333.4
    assert paper_throughput("embedded:smollm2-135m-instruct") == {}


def test_ablation_rows_map_to_labels_of_real_methods():
    """Every paper ablation row names a method label the project produces (and its authors' mode)."""
    from vase.methods import MethodSpec, method_label
    from vase.policies import build_policy
    from vase.reference import ABLATION_TO_METHOD, paper_ablation

    for paper_name, label in ABLATION_TO_METHOD.items():
        spec = MethodSpec.parse(label)
        assert method_label(spec.name, spec.params) == label
        mode = build_policy(spec.name, spec.params).reference_mode()
        if "_" in paper_name:  # the authors' eviction_mode names
            assert mode == paper_name
    assert paper_ablation() == {"full": 88.0, "random": 53.2, "evict-large": 14.3}
