"""One exception hierarchy; the CLI turns each into one line and an exit code.

    FlowrunError                 exit 1 unless a subclass says otherwise
    ├── BadInput                 exit 2: the person can fix it (file, line or step named)
    │   ├── FlowFileError        flow.yaml: syntax, schema, names, interpolation
    │   └── ComponentError       component.json, main files, functions
    ├── EngineUnavailable        exit 3: no Docker engine answers
    ├── EngineError              exit 1: Docker refused something flowrun asked for
    ├── BuildFailed              exit 1: a component image did not build
    ├── ServiceError             exit 1: the broker's management API or the platform
    │   │                        services answered with an error (status set)
    │   └── Unreachable          ... or could not be reached at all (status None)
    └── FlowFailed               exit 1: a step never became live, or a wait timed out
"""

from __future__ import annotations


class FlowrunError(Exception):
    exit_code = 1


class BadInput(FlowrunError):
    exit_code = 2


class FlowFileError(BadInput):
    pass


class ComponentError(BadInput):
    pass


class EngineUnavailable(FlowrunError):
    exit_code = 3


class EngineError(FlowrunError):
    pass


class NameTaken(EngineError):
    """A container (a swarm service) of that name exists already."""


class StaleNetwork(EngineError):
    """Docker refuses to remove a network that it says has endpoints, though nothing
    is attached to it (Docker 20.10 sometimes miscounts after containers on it are
    removed at once). Harmless: the next `up` of its flow uses it as it is."""


class BuildFailed(FlowrunError):
    pass


class ServiceError(FlowrunError):
    """An HTTP service of flowrun's (the broker's management API, the platform
    services) answered with an error; `status` is its HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(ServiceError):
    """Refused, timed out, or an answer that was not HTTP."""


class FlowFailed(FlowrunError):
    pass
