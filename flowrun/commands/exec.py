"""`flowrun exec FLOW STEP [BODY]`: one step's function, called once on one message,
alone: in the step's own image (built when missing), with its config and
credentials from the flow file, with no broker and no network; what it emitted
comes back as events. Python steps run flowrun's sailor's `once` mode; Node.js
steps the platform's own sailor's executor (resources/exec.js)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowrun.contract import names, wire
from flowrun.core.component import Runtime
from flowrun.core.load import load_plan
from flowrun.core.plan import Plan, RealStep
from flowrun.engine.images import build_image
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import BadInput, FlowFailed
from flowrun.settings import RESOURCES
from flowrun.supervise.specs import STEP_UID

MARKER = "flowrun-exec: "
EXEC_JS = RESOURCES / "exec.js"


@dataclass(frozen=True)
class Ran:
    """What one call emitted, in order, and the step's log."""

    events: list[dict[str, Any]]
    log: list[str]
    exit_code: int

    @property
    def raised(self) -> bool:
        return self.exit_code != 0 or any(e["event"] == "error" for e in self.events)


def step_of(plan: Plan, step_id: str, where: str) -> RealStep:
    step = plan.step(step_id)
    if step is None:
        raise BadInput(f"{where}: flow {plan.flow} has no step {step_id!r}; its steps: "
                       f"{', '.join(s.id for s in plan.steps)}")
    return step


def step_config(plan: Plan, step: RealStep) -> dict[str, Any]:
    """cfg as the step gets it from the step-info call: its config, its credentials
    merged in, and `_account`."""
    cfg = dict(step.config)
    if step.credentials is not None:
        cfg.update(step.credentials)
        cfg["_account"] = names.account_id(plan.flow, step.id)
    return cfg


def exec_step(engine: ContainerEngine, plan: Plan, step: RealStep, body: Any,
              snapshot: Any = None, timeout: float = 60.0,
              on_build: Callable[[str], None] = lambda line: None) -> Ran:
    build_image(engine, step.component, step.revision, step.image, on_build)
    given = {"function": step.function, "msg": wire.data_message(body), "body": body,
             "cfg": step_config(plan, step), "snapshot": snapshot or {},
             "variables": dict(plan.variables), "flow": plan.flow, "step": step.id}
    if step.runtime is Runtime.NODE:
        command = ["node", "-e", EXEC_JS.read_text()]
    else:
        command = ["python3", "-m", "flowrun.sailor.once"]
    code, out, err = engine.run_once(step.image, command, json.dumps(given, default=str).encode(),
                                     user=f"{STEP_UID}:{STEP_UID}", memory=step.memory,
                                     timeout=timeout, workdir="/app")
    if code == 124:
        raise FlowFailed(f"step {step.id} did not end within {timeout:g} s")
    events, log = [], []
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith(MARKER):
            try:
                events.append(dict(json.loads(line[len(MARKER):])))
                continue
            except ValueError:
                pass
        log.append(line)
    log += err.decode("utf-8", "replace").splitlines()
    return Ran(events, log, code)


def exec_command(engine: ContainerEngine, flow_file: Path, step_id: str, body: Any,
                 snapshot: Any, env: Mapping[str, str], timeout: float,
                 out: Callable[[str], None], log: Callable[[str], None]) -> int:
    plan = load_plan(flow_file, env)
    step = step_of(plan, step_id, "STEP")
    ran = exec_step(engine, plan, step, body, snapshot, timeout, on_build=log)
    for line in ran.log:
        log(f"{step.id} | {line}")
    for event in ran.events:
        out(json.dumps(event, default=str))
    return 1 if ran.raised else 0
