"""The command line: parse, check flag combinations, call one function."""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

import click

from flowrun import __version__
from flowrun.errors import BadInput, FlowrunError

if TYPE_CHECKING:
    from flowrun.engine.protocol import ContainerEngine

# A command's imports make hundreds of thousands of objects that live as long as the
# process; collecting cycles among them while they load took a tenth of the CLI's
# start. Collected less often from here on (`up` freezes what it loaded).
gc.set_threshold(50_000, 10, 10)

PROGRESS = click.Choice(["auto", "plain", "json"])
UI_PORT = 8411


def _engine() -> ContainerEngine:
    from flowrun.commands.resolve import connect_engine

    return connect_engine()


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
    if not dry_run:
        engine.preflight()  # e.g. a swarm manager with no registry named: exit 2
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
    from flowrun.commands.resolve import resolve_flow
    from flowrun.commands.status import flow_status, running_flows
    from flowrun.render.renderers import print_status

    engine = _engine()
    flows = [resolve_flow(engine, flow)] if flow else running_flows(engine)
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
    from flowrun.commands.resolve import flow_and_step

    if len(args) > 2:
        raise click.UsageError("give at most FLOW and STEP")
    if tail_lines != "all" and not tail_lines.isdigit():
        raise BadInput(f"--tail {tail_lines!r}: give a number of lines, or all")
    since_at = _since(since)
    engine = _engine()
    name, step = flow_and_step(engine, args)
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
    from flowrun.commands.resolve import resolve_flow

    if everything and flow:
        raise click.UsageError("--all takes no FLOW")
    engine = _engine()
    if everything:
        take_down(engine, None, grace=grace, purge=purge, everything=True)
        return
    # A flow file names a flow even when nothing of it runs (`down --purge` after a
    # failed `up` in CI); a bare name must be one this host knows.
    take_down(engine, resolve_flow(engine, flow, must_run=False, queues_count=purge),
              grace=grace, purge=purge)


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
    from flowrun.commands.send import json_body
    from flowrun.commands.send import send as push

    if len(args) > 2:
        raise click.UsageError("give at most FLOW and BODY")
    flow_arg, raw = (None, args[0]) if len(args) == 1 else (args + (None, None))[:2]
    if raw == "-":
        raw = sys.stdin.read()
        if not raw.strip():
            raise BadInput("BODY: standard input was empty; pipe a JSON body into it")
    body = json_body(raw) if raw else {}
    push(_engine(), flow_arg, body, as_step=as_step, count=count, expect_step=expect_step,
         expect_count=expect_count, timeout=timeout, out=click.echo,
         said=lambda text: click.echo(text, err=True))


@cli.command()
@click.argument("args", nargs=-1, required=True)
@click.option("-n", "--count", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option("--body", "body_only", is_flag=True, help="Print only each message's body.")
def tail(args: tuple[str, ...], count: int, timeout: float, body_only: bool) -> None:
    """Wait for COUNT messages out of a step: flowrun tail [FLOW] STEP."""
    from flowrun.commands.send import tail as wait_out

    if len(args) > 2:
        raise click.UsageError("give at most FLOW and STEP")
    flow_arg, step = (None, args[0]) if len(args) == 1 else args[:2]
    wait_out(_engine(), flow_arg, step, count=count, timeout=timeout, body_only=body_only,
             out=click.echo)


def _serve_ui_in_background(engine: ContainerEngine, port: int) -> None:
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
@click.option("--as-test", "as_test", is_flag=True,
              help="Print the thread (--thread) as a test case for a test file.")
def trace(flow: str | None, count: int, thread: str | None, follow: bool, full: bool,
          as_json: bool, as_test: bool) -> None:
    """What happened to the latest messages, step by step: flowrun trace [FLOW]."""
    from flowrun.commands.resolve import resolve_flow
    from flowrun.commands.trace import show_trace, thread_as_test

    if as_test and (not thread or follow or as_json):
        raise click.UsageError("--as-test prints one thread: give --thread ID (and neither "
                               "--follow nor --json)")
    engine = _engine()
    name = resolve_flow(engine, flow)
    if as_test:
        assert thread is not None
        click.echo(thread_as_test(engine, name, thread), nl=False)
        return
    show_trace(engine, name, count=count, thread=thread, follow=follow, full=full,
               as_json=as_json)


@cli.command(name="test")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-k", "keyword", help="Only the cases whose name contains this.")
@click.option("--junit", "junit", type=click.Path(dir_okay=False),
              help="Write the results as JUnit XML here (for CI servers).")
@click.option("--json", "as_json", is_flag=True, help="The results as JSON on stdout.")
@click.option("--keep", is_flag=True, help="Leave the flows up that this run brought up.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds each flow may take to come up.")
def test_command(files: tuple[str, ...], keyword: str | None, junit: str | None,
                 as_json: bool, keep: bool, timeout: float) -> None:
    """Run test files: flowrun test [FILE.test.yaml | FLOW.yaml ...] (default: the
    *.test.yaml files here). Exit 0: all passed, 1: a case failed, 2: a bad file."""
    import glob
    import time
    from pathlib import Path

    from flowrun.commands.test import collect, run
    from flowrun.render.tests import case_line, junit_xml, print_results, results_json

    paths = [Path(f) for f in files] or [Path(f) for f in sorted(
        glob.glob("*.test.yaml") + glob.glob("*.test.yml"))]
    if not paths:
        raise BadInput("no test files given, and none here (*.test.yaml); name one")
    suites = collect(paths, os.environ, keyword)
    started = time.monotonic()
    say = (lambda text: click.echo(text, err=True)) if as_json else click.echo
    results = run(_engine(), suites, keep=keep, up_timeout=timeout,
                  log=lambda text: click.echo(text, err=True),
                  on_outcome=lambda r: say(case_line(r)))
    seconds = time.monotonic() - started
    if junit:
        Path(junit).parent.mkdir(parents=True, exist_ok=True)
        Path(junit).write_text(junit_xml(results, seconds))
    if as_json:
        click.echo(results_json(results, seconds))
    else:
        print_results(results, seconds, sys.stdout)
    if not results or any(not r.passed for r in results):
        sys.exit(1)


@cli.command(name="exec")
@click.argument("flow", type=click.Path(dir_okay=False))
@click.argument("step")
@click.argument("body", required=False)
@click.option("--snapshot", help="The step's snapshot, as JSON (default: {}).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True)
def exec_command(flow: str, step: str, body: str | None, snapshot: str | None,
                 timeout: float) -> None:
    """Run one step's function once, alone: flowrun exec FLOW.yaml STEP [BODY | -].
    Prints what it emitted as JSON lines; exit 1 when it raised."""
    from pathlib import Path

    from flowrun.commands.exec import exec_command as run_once
    from flowrun.commands.send import json_body

    raw = sys.stdin.read() if body == "-" else body
    given = json_body(raw) if raw else {}
    state = json_body(snapshot) if snapshot else None
    code = run_once(_engine(), Path(flow), step, given, state, os.environ, timeout,
                    out=click.echo, log=lambda text: click.echo(text, err=True))
    sys.exit(code)


def main() -> None:
    # pydantic looks for plugins at its first model: it reads the metadata of every
    # installed package (13-30 ms of each command's start, `flowrun validate` 15 + 15
    # runs). flowrun's models need none; whoever wants theirs sets the variable.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
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
