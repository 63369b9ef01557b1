"""Hypothesis-generated malformed bodies against every JSON endpoint of the API core.

Each example starts from a valid body (which would write) and breaks it one way: a field of the
wrong type, negative, zero, 2^63, a float, "NaN", a huge string, an extra field, a body that is
not an object, invalid JSON, NaN literals, or the wrong content type. The answer must be a 4xx
envelope, never a 5xx, and nothing may be written (row counts and task state unchanged).
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Task, db
from tests.api.helpers import counts

SETTINGS = settings(max_examples=60, deadline=None, derandomize=False, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

HUGE = st.integers(min_value=2**53, max_value=2**70) | st.sampled_from([2**63, 2**63 - 1, 2**64, -(2**63)])
NOT_INT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1.0, 2.5, "NaN", "10", "1e3", True,
                                                                    False, [], {}, [1], {"n": 1}]),
    st.text(max_size=20),
)
POSITIVE_BAD = st.one_of(st.integers(max_value=0), st.integers(min_value=10**12 + 1), HUGE, NOT_INT)
NON_NEGATIVE_BAD = st.one_of(st.integers(max_value=-1), st.integers(min_value=10**12 + 1), HUGE, NOT_INT)
NOT_TEXT = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(),
                     st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def text_bad(max_len: int, required: bool = True):
    too_long = st.text(min_size=max_len + 1, max_size=max_len + 50).filter(lambda s: len(s) > max_len)
    options = [NOT_TEXT, too_long, st.just("x" * 100_000), st.just("a\x00b")]
    if required:
        options += [st.just(""), st.just("   "), st.none()]
    return st.one_of(*options)


NOT_OBJECT = st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=10), st.integers(), st.none(),
                       st.booleans())
BIG_DICT = st.just({"blob": "x" * 70_000})
DICT_BAD = st.one_of(NOT_OBJECT.filter(lambda v: v is not None), BIG_DICT, st.just({"n": 2**63}))


def breaking(valid: dict, bad_fields: dict, required: tuple[str, ...] = ()):
    """A strategy of (kind, payload) cases that each break `valid` one way."""
    field_cases = [st.tuples(st.just(name), strat).map(lambda t: ("json", {**valid, t[0]: t[1]}))
                   for name, strat in bad_fields.items()]
    extra = st.tuples(st.text(min_size=1, max_size=10).filter(lambda k: k not in valid),
                      st.integers() | st.text(max_size=5)).map(lambda kv: ("json", {**valid, kv[0]: kv[1]}))
    dropped = st.sampled_from(list(required) or [None]).map(
        lambda k: ("json", {x: v for x, v in valid.items() if x != k} if k else []))
    raw_json = json.dumps(valid)
    raw = st.one_of(
        st.sampled_from([raw_json[:-1], raw_json + "}", "{", "", "nul", "[", '{"a":}', "\x00",
                         raw_json.replace("}", ', "credits": NaN}'),
                         raw_json.replace("}", ', "q": Infinity}'),
                         "[" * 50_000 + "]" * 50_000, '{"x": ' + "1" * 5000 + "}",
                         raw_json.replace("}", ', "n": 1e999}')]),
        st.binary(max_size=40).filter(lambda b: not _is_json_object(b)).map(lambda b: b.decode("latin-1")),
    ).map(lambda s: ("raw", s, "application/json"))
    wrong_type = st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                  "application/xml", ""]).map(lambda ct: ("raw", raw_json, ct))
    not_object = NOT_OBJECT.map(lambda v: ("json", v))
    return st.one_of(*field_cases, extra, dropped, raw, wrong_type, not_object)


def _is_json_object(b: bytes) -> bool:
    try:
        return isinstance(json.loads(b), dict)
    except (ValueError, UnicodeDecodeError):
        return False



def send(api, method: str, path: str, case, idem: str | None):
    headers = {"Idempotency-Key": idem} if idem else {}
    if case[0] == "json":
        return api.call(method, path, case[1], headers=headers)
    _, data, ctype = case
    if ctype:
        headers["Content-Type"] = ctype
    return api.call(method, path, data=data, headers=headers)


def check(api, method: str, path: str, case, idem, extra_state=lambda: None):
    before, state = counts(), extra_state()
    status, body, resp = send(api, method, path, case, idem)
    assert status < 500, (status, resp.get_data(as_text=True)[:300])
    assert 400 <= status < 500, (status, case)
    assert body and body["success"] is False and body["code"] and isinstance(body["retryable"], bool)
    assert counts() == before, case
    assert extra_state() == state


IDEM = st.none() | st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1,
                           max_size=20)


@pytest.fixture
def world(api, make):
    """A funded customer, a priced feature, a plan and an open task: valid bodies would write."""
    make.customer(external_id="fz", credits=10_000)
    make.feature_price(feature="chat", credits_per_unit=1)
    make.plan(code="pro")
    task_id = api.post("/api/v1/tasks", {"customer": "fz", "type": "chat",
                                         "estimated_credits": 50})[1]["data"]["task_id"]
    return task_id


def test_the_harness_sees_a_write(api, world):
    """The valid bodies the cases start from do write, so the checks above can fail."""
    for method, path, body in [("POST", "/api/v1/customers/fz/debits", DEBIT),
                               ("POST", "/api/v1/debits/batch", {"debits": [ITEM]}),
                               ("POST", "/api/v1/customers/fz/grants", GRANT),
                               ("PUT", "/api/v1/customers/fz-new", UPSERT),
                               ("POST", "/api/v1/tasks", TASK),
                               ("POST", f"/api/v1/tasks/{world}/complete", {"actual_credits": 10})]:
        with pytest.raises(AssertionError):
            check(api, method, path, ("json", body), None)


DEBIT = {"feature": "chat", "quantity": 2, "credits": 5, "reference": "r", "metadata": {"a": 1}}
DEBIT_BAD = {"feature": text_bad(64), "quantity": POSITIVE_BAD, "credits": POSITIVE_BAD,
             "reference": text_bad(200, required=False), "metadata": DICT_BAD}


@SETTINGS
@given(case=breaking(DEBIT, DEBIT_BAD, ("feature",)), idem=IDEM)
def test_debit_bodies(api, world, case, idem):
    check(api, "POST", "/api/v1/customers/fz/debits", case, idem)


ITEM = {"customer": "fz", "feature": "chat", "credits": 1, "idempotency_key": "item-1"}
BATCH_ITEM_BAD = {"customer": text_bad(128), "feature": text_bad(64), "quantity": POSITIVE_BAD,
                  "credits": POSITIVE_BAD, "idempotency_key": text_bad(128) | st.just("with space"),
                  "reference": text_bad(200, required=False)}


def batch_cases():
    def with_bad(name):
        return BATCH_ITEM_BAD[name].map(
            lambda v: ("json", {"debits": [ITEM, {**ITEM, "idempotency_key": "b2", name: v}]}))

    one_bad_item = st.sampled_from(list(BATCH_ITEM_BAD)).flatmap(with_bad)
    too_many = st.just(("json", {"debits": [{**ITEM, "idempotency_key": f"k{i}"} for i in range(1001)]}))
    not_list = NOT_OBJECT.filter(lambda v: not isinstance(v, list)).map(lambda v: ("json", {"debits": v}))
    return st.one_of(one_bad_item, too_many, not_list, st.just(("json", {"debits": []})),
                     breaking({"debits": [ITEM]}, {}, ("debits",)))


@SETTINGS
@given(case=batch_cases(), idem=IDEM)
def test_batch_bodies(api, world, case, idem):
    check(api, "POST", "/api/v1/debits/batch", case, idem)


GRANT = {"credits": 10, "source": "promo", "reason": "why", "expires_at": "2099-01-01T00:00:00Z"}
GRANT_BAD = {"credits": POSITIVE_BAD,
             "source": text_bad(20) | st.sampled_from(["purchase", "deficit", "PROMO"]),
             "reason": text_bad(500),
             "expires_at": st.sampled_from(["soon", "2001-01-01T00:00:00Z", "2099-13-01", [], {}, True, "NaN",
                                            "x" * 5000])}


@SETTINGS
@given(case=breaking(GRANT, GRANT_BAD, ("credits", "source", "reason")), idem=IDEM)
def test_grant_bodies(api, world, case, idem):
    check(api, "POST", "/api/v1/customers/fz/grants", case, idem)


UPSERT = {"email": "new@example.com", "name": "New", "plan": "pro"}
UPSERT_BAD = {"email": text_bad(320) | st.text(max_size=30).filter(lambda s: "@" not in s),
              "name": text_bad(200, required=False),
              "plan": text_bad(64, required=False) | st.just("unknown-plan")}


@SETTINGS
@given(case=breaking(UPSERT, UPSERT_BAD, ("email",)))
def test_customer_upsert_bodies(api, world, case):
    check(api, "PUT", "/api/v1/customers/fz-new", case, None)


TASK = {"customer": "fz", "type": "chat", "mode": "sync", "estimated_credits": 3, "input": {"p": 1},
        "timeout_seconds": 30}
TASK_BAD = {"customer": text_bad(128), "type": text_bad(64),
            "mode": st.text(max_size=10).filter(lambda s: s not in ("sync", "async")) | NOT_TEXT,
            "estimated_credits": POSITIVE_BAD, "input": DICT_BAD,
            "timeout_seconds": st.integers(max_value=0) | st.integers(min_value=7 * 24 * 3600 + 1) | NOT_INT}


@SETTINGS
@given(case=breaking(TASK, TASK_BAD, ("customer", "type")), idem=IDEM)
def test_task_create_bodies(api, world, case, idem):
    check(api, "POST", "/api/v1/tasks", case, idem)


def task_state(task_id):
    def state():
        db.session.rollback()
        t = db.session.get(Task, task_id)
        return (t.status, t.refunded_credits, t.actual_credits)
    return state


@SETTINGS
@given(case=breaking({"actual_credits": 10, "output": {"ok": True}},
                     {"actual_credits": NON_NEGATIVE_BAD, "output": DICT_BAD}, ("actual_credits",)),
       idem=IDEM)
def test_task_complete_bodies(api, world, case, idem):
    check(api, "POST", f"/api/v1/tasks/{world}/complete", case, idem, task_state(world))


@SETTINGS
@given(case=breaking({"error": "boom"}, {"error": text_bad(2000)}, ("error",)), idem=IDEM)
def test_task_fail_bodies(api, world, case, idem):
    check(api, "POST", f"/api/v1/tasks/{world}/fail", case, idem, task_state(world))


@SETTINGS
@given(limit=st.one_of(st.integers(), st.text(max_size=12), st.just("NaN"), st.just("1.5")),
       cursor=st.none() | st.text(max_size=60))
def test_ledger_query_strings_never_fail(api, world, limit, cursor):
    from urllib.parse import urlencode

    params = {"limit": limit} | ({"cursor": cursor} if cursor is not None else {})
    status, body, _ = api.get(f"/api/v1/customers/fz/ledger?{urlencode(params)}")
    assert status in (200, 422), body
