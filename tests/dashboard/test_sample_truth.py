"""The Sample page tells the truth about a sample: "identical to the full-cache output" only when
the texts are, also when no fidelity run stored a ``first_divergence``; and its token texts come
from the tokenizer alone, without converting the embedded model's weights."""

from __future__ import annotations

import pytest

from dashboard import data
from dashboard.data import sample_views

from .conftest import errors_of

pytestmark = pytest.mark.slow

IDENTICAL = "identical to the full-cache output"


@pytest.fixture(scope="session")
def nofidelity_url(tmp_path_factory, smollm2) -> str:
    """A real bench run without ``--fidelity``: the full cache and StreamingLLM at a budget far
    below the prompt, so the outputs differ and no sample stores a ``first_divergence``."""
    from vase.bench import Bench
    from vase.methods import MethodSpec
    from vase.spec import JobSpec
    from vase.store import open_store

    url = f"sqlite:///{tmp_path_factory.mktemp('dash-nofid') / 'nofid.sqlite'}"
    model, tokenizer = smollm2
    spec = JobSpec(
        task="arith-chain",
        limit=1,
        methods=[MethodSpec("full"), MethodSpec("streamingllm")],
        budgets=[16],
        residual=4,
        max_new_tokens=32,
    )
    Bench(spec, open_store(url), model=model, tokenizer=tokenizer).execute()
    return url


def _sample_of(method: str) -> int:
    runs = data.runs()
    run_id = int(runs[runs["method_name"] == method]["run_id"].iloc[0])
    return int(data.samples([run_id])["sample_id"].iloc[0])


def _page_texts(at) -> str:
    return " ".join(str(e.value) for kind in ("success", "caption", "info") for e in getattr(at, kind))


def test_different_outputs_are_not_called_identical_without_fidelity(nofidelity_url, page_of_sample, dash_env):
    dash_env(nofidelity_url)
    sid = _sample_of("streamingllm")
    view = data.sample_view(sid)
    assert view.sample["first_divergence"] is None  # no fidelity run: nothing stored
    assert view.reference is not None
    assert view.sample["output"] != view.reference["output"], "the test needs two different outputs"
    assert view.identical is False
    # found from the stored token ids of both outputs, and placed in both texts
    ids, ref_ids = view.sample["metrics"]["tokens"], view.reference["tokens"]
    assert ids[: view.divergence] == ref_ids[: view.divergence] and ids[view.divergence] != ref_ids[view.divergence]
    assert view.sample["output"][: view.divergence_char] == view.reference["output"][: view.reference_char]

    at = page_of_sample(nofidelity_url, "sample", sid)
    shown = _page_texts(at)
    assert IDENTICAL not in shown
    assert f"agree on the first {view.divergence} generated tokens" in shown
    assert not errors_of(at)


def test_identical_outputs_are_called_identical(seeded_url, page_of_sample, dash_env):
    """Every evicting sample of the seeded grid: the claim is made exactly when the texts match."""
    dash_env(seeded_url)
    runs = data.runs()
    for run_id in runs[runs["method_name"] != "full"]["run_id"]:
        sid = int(data.samples([int(run_id)])["sample_id"].iloc[0])
        view = data.sample_view(sid)
        same = view.sample["output"] == view.reference["output"]
        assert view.identical is same
        at = page_of_sample(seeded_url, "sample", sid)
        assert (IDENTICAL in _page_texts(at)) is same


def test_agreement_rules():
    agree = sample_views.agreement_with_reference
    tokens, ref_tokens = ["The", " answer", " is", " 12", "."], ["The", " answer", " is", " 13", "."]
    same = agree("The answer is 12.", [1, 2, 3, 4, 5], tokens, "The answer is 12.", [1, 2, 3, 4, 5], tokens, None)
    assert same.identical and same.token is None
    # the stored first_divergence is None (no fidelity run), the texts differ: found from the ids
    diff = agree("The answer is 12.", [1, 2, 3, 4, 5], tokens, "The answer is 13.", [1, 2, 3, 9, 5], ref_tokens, None)
    assert not diff.identical and diff.token == 3 and diff.output_char == diff.reference_char == len("The answer is")
    # one output a prefix of the other: they part where the shorter one stops
    prefix = agree("The answer", [1, 2], tokens[:2], "The answer is 12.", [1, 2, 3, 4, 5], tokens, None)
    assert not prefix.identical and prefix.token == 2 and prefix.output_char == len("The answer")
    # no token ids stored: the texts' common prefix
    bare = agree("abcX", [], [], "abcY", [], [], None)
    assert not bare.identical and bare.token is None and bare.output_char == 3


def test_sample_page_decodes_tokens_without_converting_the_model(
    seeded_url, page_of_sample, dash_env, tmp_path, monkeypatch
):
    from vase.config import get_settings
    from vase.models import EMBEDDED_CACHE_NAME, EMBEDDED_TOKENIZER_CACHE_NAME

    monkeypatch.setenv("VASE_HOME", str(tmp_path / "home"))  # a machine that never converted the model
    get_settings.cache_clear()
    models = get_settings().models_dir
    assert models == tmp_path / "home" / "models"
    sample_views._tokenizer.clear()
    sample_views._token_texts.clear()

    dash_env(seeded_url)
    at = page_of_sample(seeded_url, "sample", _sample_of("vase"))
    assert not (models / EMBEDDED_CACHE_NAME).exists()  # no weights converted
    assert (models / EMBEDDED_TOKENIZER_CACHE_NAME / "tokenizer.json").is_file()
    view = data.sample_view(at.selectbox(key="sample_pick").value)
    # the tokens decode to the stored output, and the prompt re-tokenizes to what the run saw
    assert view.tokens and "".join(view.tokens).startswith(view.sample["output"][:40])
    texts = data.token_texts(view.sample["id"])
    assert texts.available and not texts.note and "".join(texts.prompt).startswith("<|im_start|>")
    assert not (models / EMBEDDED_CACHE_NAME).exists()
    get_settings.cache_clear()
