"""The embedded stack: ``lictel run`` (the one-shot job), ``lictel up`` (until Ctrl-C), and the two
long-running components it starts, ``lictel stream`` and ``lictel sink``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from lictel.cli.common import (
    CreateTopics,
    DataDir,
    Days,
    DupGroup,
    Seed,
    Servers,
    Start,
    Users,
    Workers,
    _sim_spec,
    console,
    esc,
    settings_for,
    with_dup_group,
)
from lictel.cli.produce import _flexnet_parser, _print_parse, _print_sessions, _sessions_reader
from lictel.cli.summary import _commands, _print_summary
from lictel.errors import LictelError


def run(
    data_dir: DataDir = None,
    workers: Workers = 1,
    jsonl: Annotated[list[Path] | None, typer.Option("--jsonl", exists=True, dir_okay=False,
                                                     help="Canonical LicenseEvent JSON Lines file(s).")] = None,
    flexnet: Annotated[list[Path] | None, typer.Option("--flexnet", exists=True, dir_okay=False,
                                                       help="FlexNet debug log(s) of one server (rotated files "
                                                            "are read oldest first).")] = None,
    server: Annotated[str | None, typer.Option(help="With --flexnet: the license server the logs come from.")] = None,
    sessions: Annotated[list[Path] | None, typer.Option("--sessions", exists=True, dir_okay=False,
                                                        help="Session export(s) of one broker site: Citrix Monitor "
                                                             "OData JSON or CSV (docs/sessions.md).")] = None,
    site: Annotated[str | None, typer.Option(help="With --sessions: the broker site the exports come from.")] = None,
    feature: Annotated[str, typer.Option(help="With --sessions: the license feature the sessions imply.")]
    = "XDT_PLT_CCU",
    org: Annotated[str | None, typer.Option(help="With --flexnet/--sessions: the organisation (default "
                                                 "LICTEL_ORG).")] = None,
    tz: Annotated[str | None, typer.Option(help="With --flexnet: the server's time zone (default: the zone the "
                                                "log names; a log that names none needs it); with --sessions: "
                                                "the zone of times without an offset (IANA name, default UTC).")]
    = None,
    date: Annotated[str | None, typer.Option(help="With --flexnet: the date of lines before any date line "
                                                  "(YYYY-MM-DD).")] = None,
    users: Users = 2000,
    servers: Servers = 3,
    days: Days = 7,
    seed: Seed = 42,
    start: Start = "2026-03-02",
    timeout: Annotated[float, typer.Option(help="Give up waiting for results after this many seconds.")] = 1800,
    dup_group: DupGroup = None,
) -> None:
    """Run the whole pipeline once: start the stack, stream the input, wait until every minute
    is final and stored, stop, and print what was found."""
    from lictel.pipeline import Stack, run_job
    from lictel.warehouse import where
    from producers.jsonl import produce_jsonl
    from producers.simulate import simulate

    settings = with_dup_group(settings_for(data_dir), dup_group)
    t0 = time.monotonic()
    if jsonl and flexnet:
        raise LictelError("give --jsonl or --flexnet, not both")
    parser = _flexnet_parser(settings, flexnet, server, org, tz, date) if flexnet else None
    exports = _sessions_reader(settings, site, org, feature, tz or "UTC") if sessions else None
    license_input = bool(flexnet or jsonl or not sessions)  # without any input: the simulated estate
    if not license_input:
        what = ""
    elif flexnet:
        total = sum(p.stat().st_size for p in flexnet)
        what = f"{len(flexnet)} FlexNet log(s) of server {server}, {total / 1e6:.1f} MB"
    elif jsonl:
        total = sum(p.stat().st_size for p in jsonl)
        what = f"{len(jsonl)} JSONL file(s), {total / 1e6:.1f} MB"
    else:
        spec = _sim_spec(settings.org, users, servers, days, seed, start)
        what = f"a simulated estate: {users} users, {servers} servers, {days} days from {start}, seed {seed}"
    if sessions:
        size = sum(p.stat().st_size for p in sessions)
        what += (" and " if what else "") + f"{len(sessions)} session export(s) of site {site}, {size / 1e6:.1f} MB"
    console.print(f"[bold]lictel run[/] on {esc(what)}")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("starting broker, stream workers and sink", total=None)
        with Stack(settings, workers) as stack:
            console.print(f"  broker {stack.bootstrap}, {workers} stream worker(s), sink -> "
                          f"{where(settings)}  "
                          f"[dim]({time.monotonic() - t0:.1f} s)[/]")

            async def feed_sessions(producer: Any) -> None:
                from producers.sessions import produce_sessions

                assert sessions is not None and exports is not None
                progress.update(task, description="reading session exports", total=None, completed=0)
                await produce_sessions(producer, list(sessions), exports)

            async def feed(producer: Any) -> None:
                if flexnet and parser is not None:
                    from producers.flexnet import produce_flexnet

                    progress.update(task, description="reading FlexNet logs", total=total, completed=0)
                    await produce_flexnet(producer, list(flexnet), parser,
                                          on_progress=lambda n: progress.advance(task, n))
                elif jsonl:
                    progress.update(task, description="streaming JSONL", total=total, completed=0)
                    await produce_jsonl(producer, list(jsonl),
                                        on_progress=lambda n: progress.advance(task, n))
                else:
                    progress.update(task, description="streaming simulated events", total=None)
                    for i, event in enumerate(simulate(spec)):
                        await producer.send(event)
                        if i % 5000 == 0:
                            progress.update(task, completed=i)

            def stage(text: str) -> None:
                progress.update(task, description=text, total=None, completed=0)

            def parts(done: int, total_parts: int) -> None:
                progress.update(task, completed=done, total=total_parts)

            result = asyncio.run(run_job(stack, feed if license_input else None,
                                         sessions_feed=feed_sessions if sessions else None,
                                         timeout=timeout, on_stage=stage, on_progress=parts))
    ps = result.produce
    console.print(f"  produced {ps.events:,} events in {ps.messages:,} messages; "
                  f"{ps.dead_letters:,} bad input line(s) dead-lettered; all stored in "
                  f"{result.seconds:.1f} s")
    for err in ps.errors[:5]:
        console.print(f"  [yellow]dead letter:[/] {esc(err)}")
    if parser is not None:
        _print_parse(parser)
    if exports is not None:
        _print_sessions(exports)
    late = result.stored.get("late_events", 0)
    if late:
        console.print(f"  [yellow]{late:,} late event(s)[/]: older than what was already final (more than "
                      f"{settings.lateness_s:g} s behind their server); counted from their arrival on and "
                      f"listed in the late_events table; correct their minutes with: "
                      f"{_commands()[0]} reconcile --data-dir {settings.data_dir} --late")
    _print_summary(settings)


def up(
    data_dir: DataDir = None, workers: Workers = 1,
    serve_port: Annotated[int | None, typer.Option(
        "--serve-port", min=1, max=65535, envvar="LICTEL_SERVE_PORT",
        help="Serve the dashboard and API on live data on this port (tokens: LICTEL_API_TOKENS).")] = None,
    serve_host: Annotated[str, typer.Option("--serve-host", envvar="LICTEL_SERVE_HOST",
                                            help="Address the dashboard and API listen on.")] = "127.0.0.1",
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without tokens (loopback only).")] = False,
    alerts: Annotated[Path | None, typer.Option("--alerts", envvar="LICTEL_ALERTS_FILE", exists=True, dir_okay=False,
                                                help="Alert rules (TOML, docs/alerts.md), evaluated on final "
                                                     "minutes as they are stored.")] = None,
) -> None:
    """Run the embedded stack (broker, stream workers, sink) until Ctrl-C; with --serve-port, the
    dashboard and API on the data as it becomes final."""
    from lictel.cli.serve import api_tokens
    from lictel.pipeline import Stack

    settings = settings_for(data_dir)
    if alerts:
        from lictel.alerts import load

        load(alerts)  # refuse a wrong rules file before anything starts
        settings = settings.model_copy(update={"alerts_file": alerts.resolve()})
    if serve_port:
        api_tokens(settings, serve_host, no_auth)  # refuse before anything starts
        settings = settings.model_copy(update={"serve_port": serve_port, "serve_host": serve_host,
                                               "serve_no_auth": no_auth})
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Stack(settings, workers) as stack:
        console.print(f"[bold]lictel up[/]: broker {stack.bootstrap}, {workers} stream worker(s), "
                      f"sink -> {settings.clickhouse_url or settings.warehouse_dir}")
        console.print(f"  send events with: LICTEL_DATA_DIR={settings.data_dir} lictel produce jsonl FILE")
        if serve_port:
            console.print(f"  dashboard and API on http://{esc(serve_host)}:{serve_port} (live)")
        if alerts:
            console.print(f"  alerts: the rules of {esc(alerts)}")
        console.print(f"  logs in {stack.logs}; Ctrl-C stops everything")
        while not stop:
            stack.check()
            time.sleep(0.5)
    console.print("stopped")


def stream(
    data_dir: DataDir = None,
    worker_id: Annotated[int | None, typer.Option(
        help="A stable id, each worker its own. With static membership (LICTEL_GROUP_STATIC, on with Kafka) "
             "a worker restarted within the session timeout takes its partitions back without a rebalance.")] = None,
    loglevel: Annotated[str | None, typer.Option(
        envvar="LICTEL_LOGLEVEL", help="Log level of this worker (default LICTEL_LOG_LEVEL, else WARNING; "
                                       "LICTEL_LOGLEVEL is the older name).")] = None,
    dup_group: DupGroup = None,
    create_topics: CreateTopics = None,
) -> None:
    """Run one stream worker (Faust) until stopped."""
    import importlib.util
    import socket

    from lictel.broker import resolve_bootstrap
    from lictel.pipeline import with_license_rules

    if importlib.util.find_spec("faust") is None:
        raise LictelError("stream workers need Faust (faust-streaming), which is not installed here: it has no "
                          "Windows build, so run stream workers on Linux or macOS (producers run anywhere)")
    from streams.app import run_worker

    settings = with_license_rules(with_dup_group(settings_for(data_dir, kafka_create_topics=create_topics),
                                                 dup_group)).with_group_defaults()
    bootstrap = resolve_bootstrap(settings)
    name = f"worker-{worker_id}" if worker_id is not None else f"worker-{socket.gethostname()}"
    per_worker = settings.model_copy(update={"data_dir": settings.data_dir / name, "kafka_bootstrap": bootstrap})
    sys.argv = [sys.argv[0]]  # Faust's worker reads argv
    if loglevel:
        per_worker = per_worker.model_copy(update={"log_level": loglevel.upper()})
    run_worker(per_worker, bootstrap, settings.group_instance("stream", worker_id))


def sink(
    data_dir: DataDir = None,
    sink_id: Annotated[int | None, typer.Option(
        help="A stable id. With static membership (LICTEL_GROUP_STATIC, on with Kafka) a sink restarted "
             "within the session timeout takes its partitions back without a rebalance.")] = None,
) -> None:
    """Run the ClickHouse sink until stopped (SIGTERM/SIGINT flush and exit)."""
    from lictel import logs
    from lictel.broker import resolve_bootstrap
    from lictel.warehouse import ensure_schema
    from sinks.clickhouse import ClickHouseSink

    settings = settings_for(data_dir).with_group_defaults()
    logs.setup("sink", settings)
    bootstrap = resolve_bootstrap(settings)

    async def go() -> None:
        from lictel import metrics

        s = ClickHouseSink(settings, bootstrap, group_instance_id=settings.group_instance("sink", sink_id))
        metrics.serve("sink", s.counters, settings.metrics_port, settings.data_dir,
                      gauges=frozenset({"final_upto_seconds"}), host=settings.metrics_host, extra=s.live,
                      health=s.health)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, s.stop.set)
        web: asyncio.Task[None] | None = None
        if settings.serve_port:
            # The sink owns the embedded warehouse: it serves the dashboard and API on live data.
            from lictel.cli.serve import api_server

            with s.lock:
                ensure_schema(s.client, settings)
            server = api_server(s.client, settings, s.lock)
            web = asyncio.create_task(server.serve())
            logging.getLogger("lictel.sink").info("serving the dashboard and API on http://%s:%d",
                                                  settings.serve_host, settings.serve_port)
        try:
            await s.run()
        finally:
            if web is not None:
                server.should_exit = True
                await web
        logging.getLogger("lictel.sink").info("sink stopped: %s", s.stats)

    asyncio.run(go())
