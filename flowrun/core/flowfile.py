"""The flow file: YAML with ${VAR} interpolation, validated strictly, with line numbers.

Loading is pure apart from reading the file and the environment mapping it is given;
every mistake becomes a FlowFileError whose message names the file and line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from flowrun.errors import FlowFileError

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
STEP_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
MEMORY_PATTERN = r"^[1-9][0-9]*[kmg]?$"
# A flow file is a few kilobytes; these caps keep a hostile or broken one (a huge
# file, YAML aliases expanding exponentially) from costing more than a moment.
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_REPLICAS = 16
# Docker's own floor for a container's memory limit, and a ceiling no laptop or CI
# machine reaches (past it the number overflows in Docker, whose raw error `up` gave).
MIN_MEMORY_BYTES = 6 * 1024 * 1024
MAX_MEMORY_BYTES = 1024 ** 4


def memory_bytes(value: str) -> int:
    """`256m` -> bytes (the MEMORY_PATTERN forms: a number, optional k, m or g)."""
    scale = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get(value[-1:], 1)
    return int(value.rstrip("kmg")) * scale


def _memory_in_range(value: str | None) -> str | None:
    if value is not None and re.fullmatch(MEMORY_PATTERN, value) and not (
            MIN_MEMORY_BYTES <= memory_bytes(value) <= MAX_MEMORY_BYTES):
        raise PydanticCustomError("memory_range", "memory out of range")
    return value


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)?$")
_DURATION_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}
MAX_REPLY_TIMEOUT = 3600.0


def duration_seconds(value: Any) -> float:
    """`30s`, `500ms`, `2m` or a number of seconds -> seconds (more than 0, at most an
    hour); anything else is a `duration` error naming the forms."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PydanticCustomError("duration", "not a duration")
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m is None:
            raise PydanticCustomError("duration", "not a duration")
        seconds = float(m.group(1)) * _DURATION_SCALE[m.group(2)]
    else:
        seconds = float(value)
    if not 0 < seconds <= MAX_REPLY_TIMEOUT:
        raise PydanticCustomError("duration", "not a duration")
    return seconds


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(pattern=STEP_ID_PATTERN)
    component: str = Field(min_length=1)
    function: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    # The step's credential (the platform's account): merged into its cfg, and what a
    # component's `updateKeys` updates.
    credentials: dict[str, Any] | None = None
    map: dict[str, str] | str | None = None
    memory: str | None = Field(default=None, pattern=MEMORY_PATTERN)
    interval: float | None = Field(default=None, gt=0, le=3600)
    _memory = field_validator("memory")(_memory_in_range)
    # Containers that consume the step's queue as competing consumers (its mapping,
    # the injected mapper in front of it, runs as many).
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)


class FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1]
    name: str = Field(pattern=NAME_PATTERN)
    memory: str | None = Field(default=None, pattern=MEMORY_PATTERN)
    _memory = field_validator("memory")(_memory_in_range)
    # Flow variables: every step's step-info call returns them (`$getFlowVariables()`).
    variables: dict[str, Any] = Field(default_factory=dict)
    # Record every message for `flowrun trace` (a copy per message, kept bounded).
    trace: bool = True
    # The platform's per-flow passthrough: each step's output is kept in
    # `msg.passthrough[<step id>]` of every message after it.
    passthrough: bool = False
    # A flow called over HTTP: how long a request waits for its answer.
    reply_timeout: float = 30.0
    _reply_timeout = field_validator("reply_timeout", mode="before")(duration_seconds)
    steps: list[StepSpec] = Field(min_length=1)
    # The flow's own test cases, for `flowrun test` (core/testfile.py checks them).
    tests: list[Any] | None = None


Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedFlow:
    """A validated flow file and where each of its values was written."""

    spec: FlowSpec
    path: Path
    lines: dict[Path_, int] = field(default_factory=dict)
    # Where a ${VAR} was substituted: such values are masked wherever printed.
    interpolated: frozenset[Path_] = frozenset()

    def from_env(self, *loc: str | int) -> frozenset[Path_]:
        """The interpolated places under `loc`, relative to it."""
        n = len(loc)
        return frozenset(p[n:] for p in self.interpolated if p[:n] == tuple(loc))

    @property
    def directory(self) -> Path:
        return self.path.parent

    def where(self, *loc: str | int) -> str:
        """`file:line` for the nearest written ancestor of `loc`."""
        return _where(self.path, self.lines, loc)

    def step_where(self, index: int, key: str | None = None) -> str:
        loc: tuple[str | int, ...] = ("steps", index) if key is None else ("steps", index, key)
        return self.where(*loc)


def _where(path: Path, lines: Mapping[Path_, int], loc: Path_) -> str:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    line = lines.get(loc)
    return f"{path}:{line}" if line else str(path)


# ---------------------------------------------------------------- YAML with lines

def _compose(text: str, path: Path) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = e.problem or e.context or "invalid YAML"
        opened = ""
        if e.context and e.context_mark and mark and e.context_mark.line != mark.line:
            opened = f" ({e.context} at line {e.context_mark.line + 1})"
        raise FlowFileError(
            f"{path}{line}: YAML syntax error: {problem}{opened}; "
            "fix the indentation, brackets or quoting"
        ) from None
    except yaml.YAMLError as e:
        raise FlowFileError(f"{path}: YAML syntax error: {e}") from None


_INTERP_VAR = re.compile(r"\$\{[A-Za-z_]")
_INTERP = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?")


def interpolate(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace ${VAR} and ${VAR:-default}; `$$` is a literal `$`."""

    def sub(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name is None:
            raise FlowFileError(
                f"{where}: bad variable reference {whole!r}; write ${{NAME}} or ${{NAME:-default}}"
            )
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise FlowFileError(
                    f"{where}: ${{{name}}} is not set; export {name}=... "
                    f"or give a default with ${{{name}:-value}}"
                )
            return default
        return value

    return _INTERP.sub(sub, text)


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


@dataclass
class _Walk:
    """State of one walk over the composed YAML graph."""

    path: Path
    env: Mapping[str, str]
    lines: dict[Path_, int] = field(default_factory=dict)
    interpolated: set[Path_] = field(default_factory=set)
    nodes: int = 0
    open: set[int] = field(default_factory=set)  # ids of the nodes being walked

    def visit(self, node: yaml.Node) -> None:
        # An alias is the same node object met again: a graph, not a tree. Walked as
        # a tree it can grow exponentially ("billion laughs") or loop forever.
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FlowFileError(
                f"{self.path}:{node.start_mark.line + 1}: the flow file expands to more than "
                f"{MAX_NODES:,} values (YAML aliases?); write it out without nested aliases"
            )
        if id(node) in self.open:
            raise FlowFileError(
                f"{self.path}:{node.start_mark.line + 1}: a YAML alias refers to itself; "
                "remove the recursive alias"
            )


def _to_python(node: yaml.Node, loc: Path_, walk: _Walk) -> Any:
    walk.visit(node)
    lines, path, env = walk.lines, walk.path, walk.env
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        walk.open.add(id(node))
        try:
            return _collection(node, loc, walk)
        finally:
            walk.open.discard(id(node))
    if isinstance(node, yaml.ScalarNode):
        value = _construct(node)
        if isinstance(value, str) and "$" in value:
            substituted = interpolate(value, env, f"{path}:{node.start_mark.line + 1}")
            if _INTERP_VAR.search(value):
                walk.interpolated.add(loc)
            return substituted
        return value
    raise FlowFileError(f"{path}:{node.start_mark.line + 1}: unsupported YAML here")


def _collection(node: yaml.Node, loc: Path_, walk: _Walk) -> Any:
    lines, path = walk.lines, walk.path
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node)
            if not isinstance(key, str | int | float | bool):
                raise FlowFileError(
                    f"{path}:{key_node.start_mark.line + 1}: keys must be plain names"
                )
            key = str(key)
            if key in out:
                raise FlowFileError(
                    f"{path}:{key_node.start_mark.line + 1}: key '{key}' appears twice; "
                    "keep one of them"
                )
            out[key] = _to_python(value_node, (*loc, key), walk)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    return [_to_python(n, (*loc, i), walk) for i, n in enumerate(node.value)]


# ---------------------------------------------------------------- validation errors

_FIELD_HINTS = {
    "name": "lowercase letters, digits and '-', starting with a letter or digit, at most 40",
    "id": "lowercase letters, digits, '-' and '_', starting with a letter or digit, at most 40",
    "memory": "a number of bytes with an optional k, m or g suffix, e.g. 256m",
}

_RANGE_HINTS = {
    "replicas": f"a whole number from 1 to {MAX_REPLICAS}",
    "interval": "seconds, more than 0 and at most 3600",
}

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "dict_type": "a mapping",
    "list_type": "a list",
    "bool_type": "true or false",
}


def _describe(err: Mapping[str, Any], model: type[BaseModel], secret: bool = False) -> str:
    loc = err["loc"]
    kind = err["type"]
    dotted = _dotted(loc)
    last = str(loc[-1]) if loc else ""
    if kind == "missing":
        return f"missing key '{last}' in {_dotted(loc[:-1]) or 'the flow'}; add it"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc, model)
        close = difflib.get_close_matches(last, allowed, n=1)
        if close:
            return f"unknown key '{last}'; did you mean '{close[0]}'?"
        return f"unknown key '{last}'; remove it (allowed here: {', '.join(allowed)})"
    if kind == "string_pattern_mismatch":
        value = "the value from ${...}" if secret else repr(err.get("input"))
        if last == "id" and not secret and "." in str(err.get("input")):
            return (f"{dotted}: {value} is not a valid id: '.' is kept for injected mapper "
                    "steps (mapper.<before>.<after>), so no visible id can clash with one; "
                    "use '-' or '_'")
        hint = _FIELD_HINTS.get(last, "see the flow file format in the README")
        return f"{dotted}: {value} is not a valid {last}; use {hint}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        value = "the value from ${...}" if secret else repr(err.get("input"))
        hint = _RANGE_HINTS.get(last, err["msg"].lower())
        return f"{dotted}: {value} is out of range; use {hint}"
    if kind == "memory_range":
        value = "the value from ${...}" if secret else repr(err.get("input"))
        return f"{dotted}: {value} is out of range; use from 6m to 1024g, e.g. 256m"
    if kind == "duration":
        value = "the value from ${...}" if secret else repr(err.get("input"))
        return (f"{dotted}: {value} is not a duration; write seconds as 30s, 500ms or 2m "
                f"(more than 0, at most {MAX_REPLY_TIMEOUT / 60:g}m)")
    if kind == "literal_error" and last == "version":
        return f"version: {err.get('input')!r} is not supported; write 'version: 1'"
    if kind == "too_short" and last == "steps":
        return "the flow has no steps; add at least one step (the trigger)"
    if kind in _TYPE_NAMES or kind.endswith("_type"):
        expected = _TYPE_NAMES.get(kind, kind.removesuffix("_type"))
        got = type(err.get("input")).__name__
        if last == "map" or (len(loc) >= 2 and loc[-2] == "map") or "map" in loc:
            return (f"{_dotted(loc[:3])}: map must be a JSONata expression string "
                    "or a mapping of field -> expression")
        return f"{dotted}: expected {expected}, got {got}; fix the value"
    return f"{dotted}: {err['msg']}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(loc: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    target: type[BaseModel] = StepSpec if "steps" in loc[:-1] else model
    return list(target.model_fields)


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    return tuple(p for p in loc if isinstance(p, int) or p in _ALL_KEYS or not _is_branch(p))


_ALL_KEYS = set(FlowSpec.model_fields) | set(StepSpec.model_fields)


def _is_branch(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("str", "none", "float", "int"))


# ---------------------------------------------------------------- entry point

def load_flow(path: str | Path, env: Mapping[str, str]) -> LoadedFlow:
    """Read, interpolate and validate a flow file; raise FlowFileError on any mistake."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES and path.is_file():
            raise FlowFileError(
                f"{path}: the flow file is {size / 1024 / 1024:.1f} MiB; flow files are "
                f"limited to {MAX_FILE_BYTES // 1024 // 1024} MiB: move data out of it"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlowFileError(f"{path}: no such flow file; check the path") from None
    except IsADirectoryError:
        raise FlowFileError(f"{path}: is a directory; give the flow file (flow.yaml)") from None
    except UnicodeDecodeError:
        raise FlowFileError(f"{path}: not UTF-8 text; save the flow file as UTF-8") from None
    except OSError as e:
        raise FlowFileError(f"{path}: cannot read ({e.strerror})") from None

    node = _compose(text, path)
    if node is None:
        raise FlowFileError(
            f"{path}: the flow file is empty; see sample_flows/ for one to start from"
        )
    walk = _Walk(path, env)
    data = _to_python(node, (), walk)
    lines = walk.lines
    if not isinstance(data, dict):
        raise FlowFileError(
            f"{path}:{node.start_mark.line + 1}: the flow file must be a mapping with "
            "version, name and steps"
        )
    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as e:
        # An unknown key is usually a typo of a missing one: report the typo.
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        err = errors[0]
        loc = _clean_loc(tuple(err["loc"]))
        cleaned = {**err, "loc": loc}
        secret = loc in walk.interpolated
        raise FlowFileError(
            f"{_where(path, lines, loc)}: {_describe(cleaned, FlowSpec, secret)}") from None
    return LoadedFlow(spec=spec, path=path, lines=lines,
                      interpolated=frozenset(walk.interpolated))
