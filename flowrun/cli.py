"""The command line: parse, check flag combinations, call one function."""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from flowrun import __version__
from flowrun.errors import BadInput, FlowFailed, FlowrunError

# A command's imports make hundreds of thousands of objects that live as long as the
# process; collecting cycles among them while they load took a tenth of the CLI's
# start. Collected less often from here on (`up` freezes what it loaded).
gc.set_threshold(50_000, 10, 10)

PROGRESS = click.Choice(["auto", "plain", "json"])
UI_PORT = 8411


def _engine() -> Any:
    from flowrun.engine.swarm import connect_engine

    # On a swarm manager, the registry its nodes pull flowrun's images from.
    return connect_engine(os.environ.get("FLOWRUN_REGISTRY") or None)


def _resolve_flow(engine: Any, flow: str | None, must_run: bool = True,
                  queues_count: bool = False) -> str:
    """A flow name from a name, a flow file, or the only running flow. A name that no
    flow on this host has is bad input (exit 2), not an empty answer."""
    from flowrun.commands.status import running_flows
    from flowrun.core.flowfile import NAME_PATTERN, load_flow

    if flow and Path(flow).is_file():
        name = load_flow(flow, os.environ).spec.name
        if must_run and name not in running_flows(engine):
            raise BadInput(f"flow {name} ({flow}) is not running; start it with "
                           f"`flowrun up {flow}`")
        return name
    running = running_flows(engine)
    if flow:
        if not re.match(NAME_PATTERN, flow):
            raise BadInput(f"{flow!r} is neither a flow file nor a flow name")
        if flow not in running and not (queues_count and _has_queues(engine, flow)):
            shown = ", ".join(running) if running else "none"
            raise BadInput(f"no flow named {flow} on this host (running: {shown}); "
                           "check the name, or give the flow file")
        return flow
    if len(running) == 1:
        return running[0]
    if not running:
        raise BadInput("no flow is running; start one with `flowrun up FLOW`")
    raise BadInput(f"several flows run ({', '.join(running)}); name one")


def _has_queues(engine: Any, flow: str) -> bool:
    from flowrun.broker.server import find_broker

    broker = find_broker(engine)
    return broker is not None and broker.has_flow(flow)


def _check_step(engine: Any, flow: str, step: str, option: str) -> None:
    from flowrun.commands.status import known_steps

    steps = known_steps(engine, flow)
    if step not in steps:
        raise BadInput(f"{option}: flow {flow} has no step '{step}'; its steps: "
                       f"{', '.join(steps)}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowrun")
def cli() -> None:
    """Run real-time integration flows on one machine."""


@cli.command()
@click.argument("flow", type=click.Path(dir_okay=False))
def validate(flow: str) -> None:
    """Check a flow file and its components; exit 0 when valid, 2 when not."""
    from flowrun.core.load import load_plan

    plan = load_plan(flow, os.environ)
    visible = sum(1 for s in plan.steps if s.visible_index is not None)
    click.echo(f"{flow}: ok: flow '{plan.flow}', {visible} visible steps, "
               f"{len(plan.steps)} real steps")


@cli.command()
@click.argument("flow", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON (secrets masked).")
def plan(flow: str, as_json: bool) -> None:
    """Show the real steps a flow file expands to, mapper steps included."""
    from flowrun.core.load import load_plan

    p = load_plan(flow, os.environ)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=2))
        return
    from flowrun.render.renderers import print_plan

    print_plan(p)


@cli.command()
@click.argument("flow", type=click.Path(dir_okay=False))
@click.option("-d", "--detach", is_flag=True, help="Return as soon as every step is live.")
@click.option("--watch", is_flag=True, help="Redeploy the steps of a component when it changes.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds until every step must be live, or exit 1.")
@click.option("--dry-run", is_flag=True, help="Print what would change, change nothing.")
@click.option("--recreate", is_flag=True, help="Recreate every step, changed or not.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds a replaced step gets to finish its message before KILL.")
@click.option("--progress", type=PROGRESS, default="auto", show_default=True)
@click.option("--ui", "with_ui", is_flag=True,
              help=f"Also serve the live page (flowrun ui) on 127.0.0.1:{UI_PORT}.")
def up(flow: str, detach: bool, watch: bool, timeout: float, dry_run: bool, recreate: bool,
       grace: float, progress: str, with_ui: bool) -> None:
    """Build what changed, start what is missing, wait until every step is live."""
    if detach and watch:
        raise click.UsageError("--watch needs an attached `up`; drop -d")
    if detach and with_ui:
        raise click.UsageError("--ui needs an attached `up`; drop -d, or run `flowrun ui`")
    from flowrun.core.load import load_plan
    from flowrun.render.output import Unbreakable
    from flowrun.render.renderers import choose
    from flowrun.supervise.supervisor import Supervisor, UpOptions

    # A reader that goes away (`| head`, `| tee` ended by the same Ctrl-C) must not
    # end the supervisor: the flow would run on with no one to take it down.
    sys.stdout = Unbreakable(sys.stdout)
    sys.stderr = Unbreakable(sys.stderr)

    p = load_plan(flow, os.environ)
    engine = _engine()
    gc.freeze()  # what is loaded by now stays: no collection walks it again
    if engine.swarm and engine.registry is None and not dry_run:
        raise BadInput("the Docker engine (DOCKER_HOST) is a swarm manager: name the registry "
                       "its nodes pull from, e.g. FLOWRUN_REGISTRY=registry.example:5000")
    renderer = choose(progress, sys.stdout.isatty(), bool(os.environ.get("CI")))
    supervisor = Supervisor(engine, renderer)
    if with_ui:
        _serve_ui_in_background(engine, UI_PORT)
    options = UpOptions(detach=detach, timeout=timeout, recreate=recreate, dry_run=dry_run,
                        watch=watch, grace=grace)
    code, summary = supervisor.up(p, options, replan=lambda: load_plan(flow, os.environ))
    if dry_run:
        click.echo(summary)
        sys.exit(code)
    _end_now(code)


def _end_now(code: int) -> NoReturn:
    """`up` is done: exit without Python's teardown of the log followers' threads and
    sockets (about 50 ms, paid at the end of every warm-up). Nothing is left to write
    or release: the output is flushed here, and the flow lock is the kernel's."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@cli.command()
@click.argument("flow", required=False)
@click.option("--json", "as_json", is_flag=True)
def status(flow: str | None, as_json: bool) -> None:
    """Every real step: state, live, uptime, restarts, queue depth, counters, staleness."""
    from flowrun.commands.status import flow_status, running_flows
    from flowrun.render.renderers import print_status

    engine = _engine()
    flows = [_resolve_flow(engine, flow)] if flow else running_flows(engine)
    statuses = [flow_status(engine, f) for f in flows]
    if as_json:
        click.echo(json.dumps({"flows": [s.to_json() for s in statuses]}, indent=2))
        return
    if not statuses or not any(s.steps for s in statuses):
        click.echo("no flow is running" + (f" named {flow}" if flow else ""))
        return
    for s in statuses:
        print_status(s)


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        try:
            return datetime.now(UTC) - timedelta(seconds=seconds)
        except OverflowError:
            raise BadInput(f"--since {value} reaches back before the year 1; use a "
                           "shorter duration") from None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(f"--since {value!r}: use a duration (30s, 5m, 2h) or an ISO "
                       "time") from None


@cli.command()
@click.argument("args", nargs=-1)
@click.option("-f", "--follow", is_flag=True, help="Keep following, across restarts.")
@click.option("--tail", "tail_lines", default="all", help="Lines from the end (a number or all).")
@click.option("--since", help="Only lines since a duration ago (30s, 5m) or an ISO time.")
@click.option("-t", "--timestamps", is_flag=True)
@click.option("--raw", is_flag=True,
              help="Node.js steps' JSON log lines as they are (default: LEVEL message).")
def logs(args: tuple[str, ...], follow: bool, tail_lines: str, since: str | None,
         timestamps: bool, raw: bool) -> None:
    """Logs of one step, or of every step interleaved: flowrun logs [FLOW] [STEP]."""
    from flowrun.commands.logs import show_logs
    from flowrun.commands.status import running_flows

    if len(args) > 2:
        raise click.UsageError("give at most FLOW and STEP")
    if tail_lines != "all" and not tail_lines.isdigit():
        raise BadInput(f"--tail {tail_lines!r}: give a number of lines, or all")
    since_at = _since(since)
    engine = _engine()
    flow_arg, step = (args + (None, None))[:2]
    if len(args) == 1 and not Path(args[0]).is_file() and args[0] not in running_flows(engine):
        flow_arg, step = None, args[0]
    name = _resolve_flow(engine, flow_arg)
    show_logs(engine, name, step, follow=follow,
              tail=int(tail_lines) if tail_lines.isdigit() else "all",
              since=since_at, timestamps=timestamps, raw=raw)


@cli.command()
@click.argument("flow", required=False)
@click.option("--purge", is_flag=True, help="Also delete the flow's queues and messages.")
@click.option("--all", "everything", is_flag=True, help="Every flow, and the broker too.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True)
def down(flow: str | None, purge: bool, everything: bool, grace: float) -> None:
    """Stop and remove a flow's containers and network (queues are kept unless --purge)."""
    from flowrun.commands.down import take_down

    if everything and flow:
        raise click.UsageError("--all takes no FLOW")
    engine = _engine()
    if everything:
        take_down(engine, None, grace=grace, purge=purge, everything=True)
        return
    # A flow file names a flow even when nothing of it runs (`down --purge` after a
    # failed `up` in CI); a bare name must be one this host knows.
    take_down(engine, _resolve_flow(engine, flow, must_run=False, queues_count=purge),
              grace=grace, purge=purge)


def _broker(engine: Any, timeout: float = 30.0) -> Any:
    """The running broker, once it accepts connections (it may be restarting)."""
    from flowrun.broker.server import find_broker

    deadline = time.monotonic() + timeout
    while True:
        broker = find_broker(engine)
        if broker is not None and broker.ready():
            return broker
        if time.monotonic() > deadline:
            if broker is None:
                raise FlowFailed("the broker is not running; start a flow with "
                                 "`flowrun up FLOW`")
            raise FlowFailed(f"the broker did not accept connections within {timeout:g} s")
        time.sleep(0.2)


def _json_body(raw: str) -> Any:
    """Strict JSON: NaN and Infinity, which Python's json takes, are not JSON (a Node.js
    step could not read the message)."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a JSON value")

    try:
        return json.loads(raw, parse_constant=refuse)
    except ValueError as e:
        raise BadInput(f"BODY is not JSON ({e}); e.g. '{{\"name\": \"Ada\"}}'") from None


def _trigger_of(engine: Any, flow: str) -> str:
    from flowrun.commands.status import flow_record

    for planned in flow_record(engine, flow) or []:
        if planned.kind == "trigger":
            return planned.step
    raise BadInput(f"flow {flow} is not running; start it with `flowrun up`")


@cli.command()
@click.argument("args", nargs=-1)
@click.option("--as", "as_step", help="Publish as if this step emitted it (default: the trigger).")
@click.option("-n", "--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Send the body this many times (headers.seq counts 0..N-1).")
@click.option("--expect", "expect_step",
              help="Then wait for --expect-count messages out of this step, and print them.")
@click.option("--expect-count", type=click.IntRange(min=1), help="Default: --count.")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True)
def send(args: tuple[str, ...], as_step: str | None, count: int, expect_step: str | None,
         expect_count: int | None, timeout: float) -> None:
    """Push a message into a running flow: flowrun send [FLOW] [BODY-JSON | -]."""
    from flowrun.broker.messaging import Sender, check_size, make_message, tap

    if len(args) > 2:
        raise click.UsageError("give at most FLOW and BODY")
    flow_arg, raw = (None, args[0]) if len(args) == 1 else (args + (None, None))[:2]
    if raw == "-":
        raw = sys.stdin.read()
        if not raw.strip():
            raise BadInput("BODY: standard input was empty; pipe a JSON body into it")
    body = _json_body(raw) if raw else {}
    engine = _engine()
    flow = _resolve_flow(engine, flow_arg)
    if as_step:
        _check_step(engine, flow, as_step, "--as")
    if expect_step:
        _check_step(engine, flow, expect_step, "--expect")
    messages = [make_message(body, {"seq": i, "sentAt": time.time()}) for i in range(count)]
    for message in messages[:1]:
        check_size(message)  # too large for the broker: exit 2 before anything is sent
    broker = _broker(engine, timeout or 30.0)
    source = as_step or _trigger_of(engine, flow)

    def publish() -> None:
        sender = Sender(broker, flow, timeout=timeout or 30.0)
        try:
            for message in messages:
                sender.send(source, message)
        finally:
            sender.close()

    if not expect_step:
        publish()
        click.echo(f"sent {count} message(s) into {flow} as {source}", err=True)
        return
    want = expect_count or count
    with tap(broker, flow, expect_step) as t:
        publish()
        got = t.take(want, timeout, lambda m: click.echo(json.dumps(m)))
    if got < want:
        raise FlowFailed(f"{got} of {want} message(s) came out of {expect_step} "
                         f"within {timeout:g} s")


@cli.command()
@click.argument("args", nargs=-1, required=True)
@click.option("-n", "--count", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option("--body", "body_only", is_flag=True, help="Print only each message's body.")
def tail(args: tuple[str, ...], count: int, timeout: float, body_only: bool) -> None:
    """Wait for COUNT messages out of a step: flowrun tail [FLOW] STEP."""
    from flowrun.broker.messaging import tap

    if len(args) > 2:
        raise click.UsageError("give at most FLOW and STEP")
    flow_arg, step = (None, args[0]) if len(args) == 1 else args[:2]
    engine = _engine()
    flow = _resolve_flow(engine, flow_arg)
    _check_step(engine, flow, step, "STEP")
    with tap(_broker(engine, timeout or 30.0), flow, step) as t:
        got = t.take(count, timeout,
                     lambda m: click.echo(json.dumps(m.get("body") if body_only else m)))
    if got < count:
        raise FlowFailed(f"{got} of {count} message(s) came out of {step} within {timeout:g} s")


def _serve_ui_in_background(engine: Any, port: int) -> None:
    import threading

    from flowrun.ui.server import serve

    threading.Thread(target=serve, args=(engine, port), daemon=True, name="ui").start()
    click.echo(f"the live page: http://127.0.0.1:{port}/", err=True)


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=UI_PORT, show_default=True,
              help="On 127.0.0.1 (0: any free port).")
def ui(port: int) -> None:
    """A live page of every running flow (graph, counters, messages, logs)."""
    from flowrun.ui.server import serve

    engine = _engine()
    serve(engine, port, on_ready=lambda bound: click.echo(
        f"flowrun ui: http://127.0.0.1:{bound}/  (Ctrl-C stops it)", err=True))


@cli.command()
@click.argument("flow", required=False)
@click.option("-n", "--count", type=click.IntRange(min=1), default=5, show_default=True,
              help="The latest N threads.")
@click.option("--thread", help="One thread, by its id (or the start of it).")
@click.option("-f", "--follow", is_flag=True, help="Show new threads as they complete.")
@click.option("--body", "full", is_flag=True, help="Whole bodies (and error stacks), not cut.")
@click.option("--json", "as_json", is_flag=True)
def trace(flow: str | None, count: int, thread: str | None, follow: bool, full: bool,
          as_json: bool) -> None:
    """What happened to the latest messages, step by step: flowrun trace [FLOW]."""
    from flowrun.commands.trace import show_trace

    engine = _engine()
    name = _resolve_flow(engine, flow)
    show_trace(engine, name, count=count, thread=thread, follow=follow, full=full,
               as_json=as_json)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except FlowrunError as e:
        click.echo(f"flowrun: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        # The Docker SDK's and its HTTP client's own errors (an engine that stops
        # answering mid-command): one line, not a traceback. Anything else is a bug.
        origin = type(e).__module__.split(".")[0]
        if origin not in ("docker", "requests", "urllib3", "pika"):
            raise
        what = "the broker" if origin == "pika" else "the Docker engine"
        click.echo(f"flowrun: {what} failed: {type(e).__name__}: {e}", err=True)
        sys.exit(1)
