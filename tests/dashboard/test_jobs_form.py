"""The Jobs page against the real API (api.app.create_app served on a loopback port): the form
posts a valid job (201) and shows a 422's messages next to the fields they name."""

from __future__ import annotations

import pytest

from .conftest import API_TOKEN, errors_of

pytestmark = pytest.mark.slow


def _siblings(node, key: str):
    """The elements beside the widget ``key`` (its parent block's children), or None."""
    children = getattr(node, "children", None)
    if not children:
        return None
    kids = list(children.values())
    if any(getattr(k, "key", None) == key for k in kids):
        return kids
    for k in kids:
        found = _siblings(k, key)
        if found is not None:
            return found
    return None


def _error_beside(at, key: str) -> str | None:
    sibs = _siblings(at._tree, key) or []
    errors = [
        str(e.value)
        for e in sibs
        if type(e).__name__ == "Alert" and getattr(e.proto, "format", None) == 1 or type(e).__name__ == "Error"
    ]
    return errors[0] if errors else None


@pytest.fixture
def jobs_app(api_server, dash_env, app_test):
    base, db = api_server
    dash_env(db, api_url=base, token=API_TOKEN)
    at = app_test()
    at.switch_page("views/jobs.py").run()
    assert not errors_of(at), errors_of(at)
    return at


def _fill(at, *, methods, budgets="32", residual=8, limit=1, max_new=2, trace="off", fidelity=False):
    at.multiselect(key="job_methods").set_value(methods).run()
    at.selectbox(key="job_task").set_value("arith-chain")
    at.number_input(key="job_limit").set_value(limit)
    at.text_input(key="job_budgets").set_value(budgets)
    at.number_input(key="job_residual").set_value(residual)
    at.number_input(key="job_max_new_tokens").set_value(max_new)
    at.selectbox(key="job_trace").set_value(trace)
    at.checkbox(key="job_fidelity").set_value(fidelity)
    return at


def _submit(at):
    at.button(key="job_submit").click().run()
    assert not errors_of(at), errors_of(at)
    return at


def test_form_is_built_from_the_api(jobs_app):
    at = jobs_app
    names = at.multiselect(key="job_methods").options
    assert any(o.startswith("vase (") for o in names) and any(o.startswith("snapkv (") for o in names)
    assert "arith-chain" in at.selectbox(key="job_task").options
    for key in ("job_model", "job_budgets", "job_temperature"):
        assert at.text_input(key=key) is not None
    for key in ("job_limit", "job_residual", "job_max_new_tokens", "job_samples", "job_seeds"):
        assert at.number_input(key=key) is not None
    for key in ("job_trace", "job_decoding"):
        assert at.selectbox(key=key) is not None
    assert at.checkbox(key="job_fidelity") is not None and at.button(key="job_submit") is not None
    # vase's parameters come with their defaults from GET /v1/methods
    assert at.text_input(key="job_param_vase_n_large").value == ""
    assert at.checkbox(key="job_param_vase_smoothing").value is True
    assert any("methods available" in str(c.value) for c in at.caption)


def test_valid_job_is_posted(jobs_app, api_server):
    from vase.store import open_store

    at = _fill(jobs_app, methods=["full"])
    at.checkbox(key="job_reference_exact").set_value(True)
    at = _submit(at)
    success = [str(s.value) for s in at.success]
    assert success and "submitted" in success[0], [str(e.value) for e in at.error]
    jobs, total = open_store(api_server[1]).list_jobs()
    assert total >= 1
    job = next(j for j in jobs if j["id"] in success[0])
    assert job["task"] == "arith-chain" and job["owner"] == "api-token"
    spec = job["spec"]
    assert [m["name"] for m in spec["methods"]] == ["full"] and spec["max_new_tokens"] == 2 and spec["limit"] == 1
    assert spec["reference_exact"] is True
    # the jobs table lists it
    at.run()
    table = at.dataframe[0].value
    assert job["id"][:8] in list(table["id"])


def test_invalid_budget_shows_the_422_next_to_the_field(jobs_app):
    at = _submit(_fill(jobs_app, methods=["full", "vase"], budgets="100", residual=32))
    assert not at.success
    message = _error_beside(at, "job_budgets")
    assert message and "multiple of" in message and "32" in message, [str(e.value) for e in at.error]
    assert any("rejected the job" in str(e.value) for e in at.error)


def test_invalid_method_parameter_shows_next_to_the_parameter(jobs_app):
    at = _fill(jobs_app, methods=["full", "vase"], budgets="64", residual=32)
    at.text_input(key="job_param_vase_n_large").set_value("-3")
    at = _submit(at)
    assert not at.success
    message = _error_beside(at, "job_param_vase_n_large")
    assert message, [str(e.value) for e in at.error]


def test_unparseable_budgets_are_caught_before_posting(jobs_app, api_server):
    from vase.store import open_store

    before = open_store(api_server[1]).list_jobs()[1]
    at = _submit(_fill(jobs_app, methods=["full", "vase"], budgets="64, lots"))
    assert "integers" in (_error_beside(at, "job_budgets") or "")
    assert open_store(api_server[1]).list_jobs()[1] == before


def test_wrong_token_is_explained(api_server, dash_env, app_test):
    base, db = api_server
    dash_env(db, api_url=base, token="not-the-token")
    at = app_test()
    at.switch_page("views/jobs.py").run()
    at = _submit(_fill(at, methods=["full"]))
    assert not at.success
    assert any("token" in str(e.value).lower() for e in at.error), [str(e.value) for e in at.error]


def test_form_starts_from_the_job_definition(jobs_app):
    """The form's starting values are vase.spec.JobSpec's defaults (no default of its own)."""
    from vase.spec import JobSpec

    at = jobs_app
    assert [o.split(" (")[0] for o in at.multiselect(key="job_methods").value] == \
        [m.name for m in JobSpec.default("methods")]
    assert at.text_input(key="job_budgets").value == ", ".join(map(str, JobSpec.default("budgets")))
    for key, name in (("job_limit", "limit"), ("job_residual", "residual"), ("job_max_new_tokens", "max_new_tokens"),
                      ("job_samples", "samples"), ("job_seeds", "seeds")):
        assert at.number_input(key=key).value == JobSpec.default(name), key
    assert at.selectbox(key="job_trace").value == JobSpec.default("trace")
    assert at.checkbox(key="job_fidelity").value is JobSpec.default("fidelity")
    assert at.checkbox(key="job_reference_exact").value is JobSpec.default("reference_exact")


def test_refused_model_shows_next_to_the_model_field(jobs_app, api_server):
    from vase.store import open_store

    before = open_store(api_server[1]).list_jobs()[1]
    at = _fill(jobs_app, methods=["full"])
    at.text_input(key="job_model").set_value("/etc")
    at = _submit(at)
    assert not at.success
    assert "is not a model this service runs" in (_error_beside(at, "job_model") or ""), [str(e.value) for e in at.error]
    assert open_store(api_server[1]).list_jobs()[1] == before
