"""Container specs: pure functions of the plan (and the broker's secret, from which
a step's credentials derive). What the executor starts is exactly what these
say; `tests/golden/orders.specs.txt` holds them for the sample flow."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

from flowrun.broker.platform import api_uri, message_keys, step_api_key
from flowrun.broker.server import Broker
from flowrun.contract import STEP_ENV_FILE, STEP_FILE, names
from flowrun.contract.wire import object_token
from flowrun.core import labels
from flowrun.core.component import Runtime
from flowrun.core.plan import Plan, RealStep, StepKind
from flowrun.engine.spec import ContainerSpec

# Steps run as a uid that no account of the host has: a host user cannot read a
# step's /proc/<pid>/environ or its config file by sharing its uid.
STEP_UID = 1_999_999
# Processes and threads per step: room for real listeners, not for a fork bomb.
STEP_PIDS_LIMIT = 512


def step_secrets(flow: str, step_id: str, broker: Broker) -> dict[str, str]:
    """What a step must keep to itself: its broker login, its key for the platform
    services, and its flow's message keys."""
    keys = message_keys(broker, flow)
    return {"amqp_uri": broker.step_uri(flow, step_id), "api_uri": api_uri(),
            "api_username": names.api_user(flow, step_id),
            "api_key": step_api_key(broker, flow, step_id),
            "message_password": keys.password, "message_iv": keys.iv,
            # The platform services' object store, as the platform's libraries reach it.
            "object_storage_uri": api_uri(),
            "object_storage_token": object_token(broker.admin_pass, flow, step_id)}


def node_env_file(secrets: dict[str, str]) -> tuple[bytes, int]:
    """The secrets as the platform's sailor reads them, for its launcher to source."""
    env = {f"ELASTICIO_{k.upper()}": v for k, v in secrets.items()
           if k not in ("message_password", "message_iv")}
    env["ELASTICIO_MESSAGE_CRYPTO_PASSWORD"] = secrets["message_password"]
    env["ELASTICIO_MESSAGE_CRYPTO_IV"] = secrets["message_iv"]
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items())).encode(), 0o400


def step_files(plan: Plan, step: RealStep, broker: Broker) -> dict[str, tuple[bytes, int]]:
    secrets = step_secrets(plan.flow, step.id, broker)
    if step.kind is StepKind.MAPPER:
        # Its config (the mapping) is all here, and it keeps no snapshot: it makes no
        # step-info call, so the services need not be on the mappers' network.
        for services in ("api_uri", "object_storage_uri", "object_storage_token"):
            del secrets[services]
    files = {STEP_FILE: (json.dumps({**secrets, "cfg": step.config},
                                    sort_keys=True).encode(), 0o400)}
    if step.runtime is Runtime.NODE:
        files[STEP_ENV_FILE] = node_env_file(secrets)
    return files


def step_spec(plan: Plan, step: RealStep, index: int, broker: Broker,
              replica: int = 1) -> ContainerSpec:
    is_mapper = step.kind is StepKind.MAPPER
    name = names.container(plan.flow, step.id, replica)
    env = {**step.env(plan.flow), "FLOWRUN_REPLICA": str(replica)}
    if step.runtime is Runtime.NODE:
        env["ELASTICIO_CONTAINER_ID"] = name
    return ContainerSpec(
        name=name,
        image=step.image,
        env=env,
        labels={
            labels.ROLE: labels.ROLE_STEP,
            labels.FLOW: plan.flow,
            labels.STEP: step.id,
            labels.REPLICA: str(replica),
            labels.REVISION: step.revision,
            labels.CONFIG_HASH: step.config_hash(plan.flow),
            labels.KIND: step.kind.value,
            labels.INDEX: str(index),
            labels.COMPONENT: str(step.component.path),
            labels.FUNCTION: step.function,
            labels.SOURCE: str(plan.source.resolve()),
            labels.RUNTIME: step.runtime.value,
        },
        # A mapper needs nothing but the broker: it sits on the flow's internal
        # network, which leads nowhere else. Components keep their way out.
        network=names.internal_network(plan.flow) if is_mapper else names.network(plan.flow),
        memory=step.memory,
        user=f"{STEP_UID}:{STEP_UID}",
        pids_limit=STEP_PIDS_LIMIT,
        init=True,  # a stop at any moment of its life is taken (engine/spec.py)
        files=step_files(plan, step, broker),
        files_owner=STEP_UID,
    )


def hook_spec(flow: str, step: str, image: str, env: Mapping[str, str],
              broker: Broker) -> ContainerSpec:
    """A one-shot run of a Node.js trigger's shutdown hook (at `down`), from the image
    and environment its container had."""
    return ContainerSpec(
        name=names.hook_container(flow, step), image=image,
        env={**env, "ELASTICIO_HOOK_SHUTDOWN": "1"},
        labels={labels.ROLE: labels.ROLE_HOOK, labels.FLOW: flow, labels.STEP: step},
        network=names.network(flow), memory="256m", user=f"{STEP_UID}:{STEP_UID}",
        pids_limit=STEP_PIDS_LIMIT, restart=False, init=True,
        files={STEP_ENV_FILE: node_env_file(step_secrets(flow, step, broker))},
        files_owner=STEP_UID,
    )


def record_labels(plan: Plan) -> dict[str, str]:
    """What the flow's record volume says: its real steps, so a step removed by hand
    still shows in `status` (as missing) rather than vanishing."""
    return {
        labels.FLOW: plan.flow,
        labels.ROLE: labels.ROLE_RECORD,
        labels.STEPS: json.dumps([[s.id, s.kind.value, s.replicas] for s in plan.steps],
                                 separators=(",", ":")),
        labels.SOURCE: str(plan.source.resolve()),
        **({labels.WEBHOOK: "1"} if plan.webhook else {}),
    }
