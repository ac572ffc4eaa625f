"""Test files: cases of a flow, written next to it, run by `flowrun test`.

`orders.test.yaml` names its flow (`flow: orders.yaml`, relative to itself) and
lists `tests:`; a flow file may hold its own `tests:` list too. Each case puts one
thing into the flow (`send` as the trigger or into one step's input, an `http`
request to a webhook flow, or `exec` of one step alone) and says what must come
out (`expect`: messages of a step, errors of a step; `response`: the HTTP answer).

Loading is pure: YAML with line numbers (as flow files), validated strictly; a
mistake is a TestFileError naming the file, the line and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowrun.core.flowfile import (
    MAX_FILE_BYTES,
    Path_,
    _compose,
    _to_python,
    _Walk,
    duration_seconds,
)
from flowrun.errors import BadInput

DEFAULT_TIMEOUT = 10.0


class TestFileError(BadInput):
    """A test file that cannot be run as written (exit 2)."""

    __test__ = False  # not a pytest class, whatever its name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SendSpec(_Strict):
    body: Any = Field(default_factory=dict)
    to: str | None = None  # a step's input (default: as the trigger emitted it)
    headers: dict[str, Any] = Field(default_factory=dict)


class HttpSpec(_Strict):
    method: Literal["GET", "POST"] = "POST"
    path: str = ""  # after the flow's URL: "?who=ada", "/orders/7"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None


class ExecSpec(_Strict):
    step: str = Field(min_length=1)
    body: Any = Field(default_factory=dict)
    snapshot: Any = None


class ExpectSpec(_Strict):
    step: str | None = None  # messages out of this real step ...
    error: str | None = None  # ... or errors raised at this step
    body_contains: Any = None
    body_equals: Any = None
    jsonata: str | None = None  # a predicate on the body
    message_contains: str | None = None
    count: int = Field(default=1, ge=0, le=100_000)

    @model_validator(mode="after")
    def _one_target(self) -> ExpectSpec:
        if (self.step is None) == (self.error is None):
            raise ValueError("give either 'step' (what comes out of it) or 'error' (what "
                             "fails there)")
        if self.error is not None and self.model_fields_set & {"body_equals", "jsonata"}:
            raise ValueError("an 'error' expectation checks 'message_contains' (and the "
                             "failed input with body_contains); 'step' checks bodies")
        if self.step is not None and "message_contains" in self.model_fields_set:
            raise ValueError("'message_contains' is for 'error' expectations")
        return self

    @property
    def target(self) -> str:
        return self.step if self.step is not None else str(self.error)

    @property
    def kind(self) -> Literal["message", "error"]:
        return "message" if self.step is not None else "error"

    def has(self, name: str) -> bool:
        return name in self.model_fields_set


class ResponseSpec(_Strict):
    status: int | None = Field(default=None, ge=100, le=599)
    body_contains: Any = None
    body_equals: Any = None
    headers_contain: dict[str, str] = Field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.model_fields_set


class CaseSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    send: SendSpec | None = None
    http: HttpSpec | None = None
    exec: ExecSpec | None = None
    expect: list[ExpectSpec] = Field(default_factory=list)
    response: ResponseSpec | None = None
    timeout: float = DEFAULT_TIMEOUT
    _timeout = field_validator("timeout", mode="before")(duration_seconds)

    @model_validator(mode="after")
    def _one_input(self) -> CaseSpec:
        given = [k for k in ("send", "http", "exec") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'send', 'http' or 'exec'")
        if self.response is not None and self.http is None:
            raise ValueError("'response' checks the answer to an 'http' case")
        if not self.expect and self.response is None:
            raise ValueError("nothing is checked: add 'expect' (or 'response' for http)")
        return self


class TestFileSpec(_Strict):
    __test__ = False
    flow: str = Field(min_length=1)
    tests: list[CaseSpec] = Field(min_length=1)


class _FlowTests(BaseModel):
    """A flow file's own `tests:` (the rest of it is the flow's loader's business)."""

    model_config = ConfigDict(extra="allow", strict=True)
    tests: list[CaseSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Case:
    spec: CaseSpec
    where: str  # file:line of the case
    index: int

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class LoadedTests:
    path: Path  # the test file (or the flow file holding its tests)
    flow_path: Path
    cases: tuple[Case, ...]
    lines: dict[Path_, int] = field(default_factory=dict)

    def where(self, *loc: str | int) -> str:
        while loc and loc not in self.lines:
            loc = loc[:-1]
        line = self.lines.get(loc)
        return f"{self.path}:{line}" if line else str(self.path)


def is_test_file(path: Path) -> bool:
    return path.name.endswith((".test.yaml", ".test.yml"))


def load_tests(path: str | Path, env: Mapping[str, str]) -> LoadedTests:
    """A test file, or a flow file with `tests:`; TestFileError on any mistake."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise TestFileError(f"{path}: over {MAX_FILE_BYTES // 1024 // 1024} MiB; a test "
                                "file holds cases, not data")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TestFileError(f"{path}: no such test file; check the path") from None
    except (IsADirectoryError, UnicodeDecodeError, OSError) as e:
        raise TestFileError(f"{path}: cannot read it as UTF-8 text ({e})") from None
    node = _compose(text, path)
    if node is None:
        raise TestFileError(f"{path}: empty; a test file has 'flow:' and 'tests:'")
    walk = _Walk(path, env)
    data = _to_python(node, (), walk)
    if not isinstance(data, dict):
        raise TestFileError(f"{path}:{node.start_mark.line + 1}: a test file is a mapping "
                            "with 'flow:' and 'tests:'")
    own = "steps" in data  # a flow file with its own tests
    if own and "tests" not in data:
        raise TestFileError(f"{path}: a flow file with no 'tests:'; add a tests: list, or "
                            "give its test file (NAME.test.yaml)")
    model: type[BaseModel] = _FlowTests if own else TestFileSpec
    try:
        spec = model.model_validate(data)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        loc = _clean(tuple(errors[0]["loc"]))
        raise TestFileError(f"{_where(path, walk.lines, loc)}: "
                            f"{_describe(errors[0], loc)}") from None
    flow_path = path if own else (path.parent / str(data["flow"]))
    cases = tuple(Case(c, _where(path, walk.lines, ("tests", i)), i)
                  for i, c in enumerate(spec.tests))  # type: ignore[attr-defined]
    seen: dict[str, str] = {}
    for case in cases:
        if case.name in seen:
            raise TestFileError(f"{case.where}: the case name {case.name!r} is used twice "
                                f"(also {seen[case.name]}); give each case its own name")
        seen[case.name] = case.where
    return LoadedTests(path=path, flow_path=flow_path, cases=cases, lines=walk.lines)


# ---------------------------------------------------------------- messages

_MODELS: dict[str, type[BaseModel]] = {
    "tests": CaseSpec, "send": SendSpec, "http": HttpSpec, "exec": ExecSpec,
    "expect": ExpectSpec, "response": ResponseSpec}
_TYPES = {"string_type": "a string", "int_type": "an integer", "float_type": "a number",
          "dict_type": "a mapping", "list_type": "a list", "bool_type": "true or false",
          "model_type": "a mapping", "literal_error": "one of the listed values"}


def _clean(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """pydantic's location without the union branches it tried."""
    return tuple(p for p in loc if isinstance(p, int) or not (
        isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "none"))))


def _where(path: Path, lines: Mapping[Path_, int], loc: tuple[str | int, ...]) -> str:
    while loc and loc not in lines:
        loc = loc[:-1]
    line = lines.get(loc)
    return f"{path}:{line}" if line else str(path)


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the test file"


def _describe(err: Mapping[str, Any], loc: tuple[str | int, ...]) -> str:
    kind, dotted = err["type"], _dotted(loc)
    last = str(loc[-1]) if loc else ""
    if kind == "missing":
        return f"missing key '{last}' in {_dotted(loc[:-1])}; add it"
    if kind == "extra_forbidden":
        owner = next((str(p) for p in reversed(loc[:-1]) if str(p) in _MODELS), "")
        allowed = list((_MODELS.get(owner) or TestFileSpec).model_fields)
        close = difflib.get_close_matches(last, allowed, n=1)
        if close:
            return f"unknown key '{last}'; did you mean '{close[0]}'?"
        return f"unknown key '{last}'; remove it (allowed here: {', '.join(allowed)})"
    if kind == "duration":
        return (f"{dotted}: {err.get('input')!r} is not a duration; write seconds as 10s, "
                "500ms or 2m")
    if kind == "value_error":
        return f"{dotted}: {str(err['msg']).removeprefix('Value error, ')}"
    if kind == "too_short" and last == "tests":
        return "no cases: add at least one under 'tests:'"
    if kind in _TYPES:
        return (f"{dotted}: expected {_TYPES[kind]}, got {type(err.get('input')).__name__}; "
                "fix the value")
    return f"{dotted}: {err['msg']}"
