"""The smoke suite format, JSON paths and assertions — no processes needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from flightcheck.errors import ConfigError
from flightcheck.fakemodel import FAKE_API_KEY
from flightcheck.smoke.assertions import check_json, check_schema, diff
from flightcheck.smoke.jsonpath import parse_path, resolve
from flightcheck.smoke.runner import Mode, detect_mode, percentile, provider_unreachable
from flightcheck.smoke.suite import JsonCheck, load_suite, parse_suite

REPO = Path(__file__).resolve().parents[2]


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smoke.yaml"
    path.write_text(text)
    return path


def test_reference_suite_loads_with_case_lines() -> None:
    suite = load_suite(REPO / "smoke.yaml")
    assert len(suite.cases) >= 8
    text = (REPO / "smoke.yaml").read_text().splitlines()
    for case in suite.cases:
        assert case.line is not None and case.name in text[case.line - 1]
    assert any(c.external for c in suite.cases)
    assert suite.env_for("fake") == {"AI_PROVIDER": "openai"}
    # The YAML anchor gives both question cases the same resolved schema.
    schemas = [c.expect.schema_ for c in suite.cases if c.request.path == "/v1/questions"
               and c.expect.schema_ is not None]
    assert len(schemas) >= 2 and all(s == schemas[0] for s in schemas)


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("cases: []", "cases: List should have at least 1 item"),
    ("cases: [{name: a, request: {path: /x}, expect: {json: [{path: a, equal: 1}]}}]",
     "cases.0.expect.json.0.equal (case 'a'): unknown key"),
    ("cases: [{name: a, request: {path: x}}]", "must start with '/'"),
    ("cases: [{name: a, request: {path: /x}, expect: {json: [{path: a}]}}]",
     "needs exactly one of equals, contains, regex, approx, exists, one_of; got none"),
    ("cases: [{name: a, request: {path: /x}, expect: {json: [{path: a, equals: 1, "
     "regex: x}]}}]", "got equals, regex"),
    ("cases: [{name: a, request: {path: /x}, expect: {json: [{path: a, regex: '('}]}}]",
     "does not compile"),
    ("cases: [{name: a, request: {path: /x}, expect: {json: [{path: 'a..b', exists: true}]}}]",
     "is malformed"),
    ("cases: [{name: a, request: {path: /x}, expect: {json: [{path: a, equals: 1, "
     "tolerance: 1}]}}]", "tolerance only goes with approx"),
    ("cases: [{name: a, request: {path: /x}}, {name: a, request: {path: /y}}]",
     "used twice"),
    ("cases: [{name: a, request: {path: /x}, model: {replies: [{contnet: x}]}}]",
     "unknown key(s) ['contnet']"),
    ("cases: [{name: a, request: {path: /x}, expect: {tokens: {}}}]",
     "at least one of max_total"),
    ("cases: [{name: a, request: {path: /x, method: FETCH}}]", "cases.0.request.method"),
    ("version: 2\ncases: [{name: a, request: {path: /x}}]", "version"),
    ("env: {staging: {A: b}}\ncases: [{name: a, request: {path: /x}}]", "env.staging"),
    ("- just\n- a list", "a mapping with a 'cases' list"),
])
def test_invalid_suites_name_the_key_and_the_problem(tmp_path: Path, yaml_text: str,
                                                     message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_suite(_suite(tmp_path, yaml_text))
    assert message in err.value.what
    assert err.value.fix


def test_invalid_schema_is_refused_at_load(tmp_path: Path) -> None:
    path = _suite(tmp_path, "cases: [{name: a, request: {path: /x}, "
                            "expect: {schema: {type: objekt}}}]")
    with pytest.raises(ConfigError, match="case 'a': invalid JSON schema"):
        load_suite(path)


def test_schema_file_relative_to_the_suite(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "q.json").write_text('{"type": "object", "required": ["q"]}')
    suite = load_suite(_suite(tmp_path, "cases: [{name: a, request: {path: /x}, "
                                        "expect: {schema: schemas/q.json}}]"))
    assert suite.cases[0].expect.schema_ == {"type": "object", "required": ["q"]}
    missing = _suite(tmp_path, "cases: [{name: a, request: {path: /x}, "
                               "expect: {schema: nope.json}}]")
    with pytest.raises(ConfigError, match="cannot load schema file"):
        load_suite(missing)


def test_yaml_syntax_error_points_at_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"smoke.yaml:3:5: not valid YAML: expected <block end>"):
        load_suite(_suite(tmp_path, "cases:\n  - name: a\n    : b: c\n"))


def test_missing_suite_says_how_to_write_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_suite(tmp_path / "nope.yaml")
    assert "not found" in err.value.what and "docs/smoke.md" in err.value.fix


def test_prices_accept_pairs_and_objects() -> None:
    suite = parse_suite({"prices": {"a": [1, 2], "b": {"input": 3, "output": 4}},
                         "cases": [{"name": "x", "request": {"path": "/"}}]})
    assert suite.prices["a"].cost(1_000_000, 500_000) == pytest.approx(2.0)
    assert suite.prices["b"].input == 3


# --- JSON paths -----------------------------------------------------------------------------


def test_paths() -> None:
    doc = {"a": {"b": [10, {"c": "x"}]}, "odd.key": 1, "dash-key": 2}
    assert parse_path("$.a.b[1].c") == ("a", "b", 1, "c")
    assert resolve(doc, "a.b[1].c") == (True, "x")
    assert resolve(doc, "a.b[-1].c") == (True, "x")
    assert resolve(doc, '["odd.key"]') == (True, 1)
    assert resolve(doc, "dash-key") == (True, 2)
    assert resolve(doc, "$") == (True, doc)
    assert resolve(doc, "a.b[5]") == (False, None)
    assert resolve(doc, "a.missing") == (False, None)
    assert resolve([1, 2], "a") == (False, None)
    for bad in ("a..b", "a b", "[x]", "a.[0]x"):
        with pytest.raises(ValueError):
            parse_path(bad)


# --- assertions -----------------------------------------------------------------------------


def _check(**kw: object) -> JsonCheck:
    return JsonCheck.model_validate(kw)


def test_equals_is_json_equality() -> None:
    assert check_json(_check(path="n", equals=4), {"n": 4.0}).ok
    assert not check_json(_check(path="n", equals=1), {"n": True}).ok
    assert not check_json(_check(path="n", equals="4"), {"n": 4}).ok
    assert check_json(_check(path="n", equals=None), {"n": None}).ok
    res = check_json(_check(path="n", equals="4"), {"n": "5"})
    assert res.message == '$.n: expected "4", got "5"'
    assert (res.expected, res.actual) == ("4", "5")


def test_structured_mismatch_shows_a_unified_diff() -> None:
    res = check_json(_check(path="q", equals={"a": 1, "b": 2}), {"q": {"a": 1, "b": 3}})
    assert not res.ok
    assert '-  "b": 2' in res.message and '+  "b": 3' in res.message
    assert diff([1], [2]).startswith("--- expected")


def test_contains_regex_one_of_exists() -> None:
    doc = {"s": "Paris, France", "l": [1, {"k": 2}], "d": {"x": 1, "y": 2}}
    assert check_json(_check(path="s", contains="Paris"), doc).ok
    assert check_json(_check(path="l", contains={"k": 2}), doc).ok
    assert check_json(_check(path="d", contains={"x": 1}), doc).ok
    assert not check_json(_check(path="d", contains={"x": 2}), doc).ok
    assert check_json(_check(path="s", regex="^Par"), doc).ok
    assert not check_json(_check(path="s", regex="^France"), doc).ok
    assert check_json(_check(path="l[0]", one_of=[0, 1]), doc).ok
    assert check_json(_check(path="zz", exists=False), doc).ok
    missing = check_json(_check(path="zz", contains="x"), doc)
    assert not missing.ok and missing.message == "$.zz is missing from the response"


def test_approx_tolerances() -> None:
    assert check_json(_check(path="v", approx=1.0, tolerance=0.1), {"v": 1.05}).ok
    assert check_json(_check(path="v", approx=100, rel_tolerance=0.01), {"v": "100.9"}).ok
    off = check_json(_check(path="v", approx=1.0, tolerance=0.01), {"v": 1.5})
    assert not off.ok and "expected 1.0 ± 0.01, got 1.5 (off by 0.5)" in off.message
    assert not check_json(_check(path="v", approx=1.0), {"v": "abc"}).ok
    assert not check_json(_check(path="v", approx=1.0), {"v": 1.000001}).ok  # default 1e-9


def test_schema_errors_name_the_path() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "object", "properties": {
        "answer": {"type": "string"}}}}}
    res = check_schema(schema, {"q": {"answer": 3}})
    assert not res.ok and "$.q.answer: 3 is not of type 'string'" in res.message
    assert check_schema(schema, {"q": {"answer": "3"}}).ok


# --- modes, outages, percentiles ------------------------------------------------------------


def test_mode_is_the_explicit_choice_never_the_keys() -> None:
    assert detect_mode({}, "fake") == Mode("fake")
    assert detect_mode({"OPENAI_API_KEY": "sk-real"}, "fake") == Mode("fake")
    assert detect_mode({}, "real") == Mode("real", None)
    assert detect_mode({"OPENAI_API_KEY": FAKE_API_KEY}, "real") == Mode("real", None)
    assert detect_mode({"GOOGLE_API_KEY": "AIza-real"}, "real") == Mode("real", "gemini")
    assert detect_mode({"OPENAI_API_KEY": "sk-real"}, "real") == Mode("real", "openai")


@pytest.mark.parametrize(("status", "body", "expected"), [
    (502, "openai provider failed: cannot connect to https://api.openai.com/v1", True),
    (503, '{"error": "ConnectError: [Errno -3] Temporary failure in name resolution"}', True),
    (502, "provider failed: https://api.openai.com/v1 did not answer within 30s", True),
    (503, "the model provider is overloaded", True),
    (502, "the provider returned malformed output", False),
    (500, "cannot connect to provider", False),
    (200, "unreachable", False),
    (None, "", False),
])
def test_provider_unreachable(status: int | None, body: str, expected: bool) -> None:
    assert provider_unreachable(status, body) is expected


def test_percentile_nearest_rank() -> None:
    assert percentile([], 95) is None
    assert percentile([5.0], 50) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 95) == 95.0
