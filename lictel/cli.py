"""The ``lictel`` command. Subcommands by noun; every option also reads its ``LICTEL_*`` variable.

    lictel run                  the one-shot job on the embedded stack (simulated or --jsonl input)
    lictel up                   the embedded stack, until Ctrl-C
    lictel produce jsonl|simulate
    lictel stream               one stream worker
    lictel sink                 the ClickHouse sink
    lictel db migrate           apply ClickHouse migrations
    lictel export usage         minute/hour/day/month rows as CSV or JSON
    lictel report peak          peaks, averages, license-hours, denials per feature
    lictel report ud            user/device licenses over 90-day windows (users, vendor rule, optimum)
    lictel report usage|sizing|overuse|denials|dormant|heatmap|forecast|chargeback|compliance
    lictel report vendor-view|vendor-diff|reconcile-vendor, lictel ids, lictel vendor   (lictel.cli_vendor)
    lictel alerts check|test|list   alert rules, a test delivery, what fired   (lictel.cli_alerts)
    lictel serve                the HTTP API: JSON and CSV under /api/v1, OpenAPI at /docs   (lictel.cli_serve)
    lictel config               every setting, its variable and default
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
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
from rich.table import Table

from lictel import cli_alerts, cli_serve, cli_vendor
from lictel.cli_common import (
    DataDir,
    FeatureOpt,
    Fmt,
    Force,
    From,
    OrgOpt,
    To,
    TzOpt,
    _analysis,
    _cell,
    _check_format,
    _deliver,
    _emit,
    _parse_day,
    _scope,
    console,
    esc,
    out,
    settings_for,
    write_file,
)
from lictel.config import Settings, settings_help
from lictel.errors import LictelError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="lictel: license telemetry, measured by yourself.")
produce_app = typer.Typer(no_args_is_help=True, help="Send input to Kafka: license events (events topic) or "
                                                     "session exports (sessions topic).")
db_app = typer.Typer(no_args_is_help=True, help="ClickHouse schema.")
export_app = typer.Typer(no_args_is_help=True, help="Export stored data.")
report_app = typer.Typer(no_args_is_help=True, help="Readable reports.")
ent_app = typer.Typer(no_args_is_help=True, help="What the organisation may use: license files and contracts.")
app.add_typer(produce_app, name="produce")
app.add_typer(db_app, name="db")
app.add_typer(export_app, name="export")
app.add_typer(report_app, name="report")
app.add_typer(ent_app, name="entitlements")
app.add_typer(cli_vendor.ids_app, name="ids")
app.add_typer(cli_vendor.vendor_app, name="vendor")
app.command("serve")(cli_serve.serve)
app.add_typer(cli_alerts.alerts_app, name="alerts")
report_app.command("vendor-view")(cli_vendor.report_vendor_view)
report_app.command("vendor-diff")(cli_vendor.report_vendor_diff)
report_app.command("reconcile-vendor")(cli_vendor.report_reconcile_vendor)

Workers = Annotated[int, typer.Option("--workers", envvar="LICTEL_WORKERS", min=1,
                                      help="Stream worker processes.")]
DupGroup = Annotated[list[str] | None, typer.Option(
    "--dup-group", metavar="FEATURE=RULE",
    help="Charge FEATURE's checkouts under this DUP_GROUP rule (NONE, SITE, U, H, UH, UHD, ...; '*' = every "
         "feature without a more specific rule); repeatable; added to LICTEL_DUP_GROUP and overriding the "
         "imported license files for the features it names.")]
Users = Annotated[int, typer.Option(envvar="LICTEL_SIM_USERS", min=1, help="Simulated users.")]
Servers = Annotated[int, typer.Option(envvar="LICTEL_SIM_SERVERS", min=1, help="Simulated license servers.")]
Days = Annotated[int, typer.Option(envvar="LICTEL_SIM_DAYS", min=1, help="Simulated days.")]
Seed = Annotated[int, typer.Option(envvar="LICTEL_SIM_SEED", help="Simulation seed (same seed, same events).")]
Start = Annotated[str, typer.Option(envvar="LICTEL_SIM_START", help="First simulated UTC day (YYYY-MM-DD).")]


def with_dup_group(settings: Settings, dup_group: list[str] | None) -> Settings:
    """``--dup-group`` options on top of ``LICTEL_DUP_GROUP`` (a later entry for a feature wins)."""
    if not dup_group:
        return settings
    from lictel import dupgroup

    rules = dupgroup.parse(settings.dup_group)
    for item in dup_group:
        rules |= dupgroup.parse(item, "--dup-group")
    return settings.model_copy(update={"dup_group": dupgroup.render(rules)})


def _sim_spec(org: str, users: int, servers: int, days: int, seed: int, start: str) -> Any:
    from producers.simulate import SimSpec

    try:
        first = dt.date.fromisoformat(start)
    except ValueError:
        raise LictelError(f"--start {start!r} is not a date like 2026-03-02") from None
    return SimSpec(org=org, users=users, servers=servers, days=days, seed=seed, start=first)


# --------------------------------------------------------------------------- run / up


@app.command()
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
                          f"{settings.clickhouse_url or f'chDB {settings.warehouse_dir}'}  "
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


@app.command()
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
    from lictel.cli_serve import api_tokens
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


# --------------------------------------------------------------------------- components


@produce_app.command("jsonl")
def produce_jsonl_cmd(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="JSON Lines files.")],
    data_dir: DataDir = None,
    final: Annotated[bool, typer.Option(help="End with closing heartbeats: the input is complete.")] = True,
) -> None:
    """Send canonical LicenseEvent JSON Lines to the events topic."""
    from producers.jsonl import produce_jsonl

    settings = settings_for(data_dir)

    async def feed(producer: Any, advance: Callable[[int], None]) -> None:
        await produce_jsonl(producer, files, on_progress=advance)

    _print_produce(_produce(settings, "jsonl", feed, sum(f.stat().st_size for f in files), final))


def _produce(settings: Settings, source: str, feed: Callable[[Any, Callable[[int], None]], Awaitable[None]],
             total_bytes: int | None, final: bool = True, stream: str = "events") -> Any:
    """Run one producer against the configured broker with a progress display; return its stats."""
    from lictel.broker import ensure_topics, resolve_bootstrap
    from producers.base import EventProducer

    bootstrap = resolve_bootstrap(settings)

    async def go() -> Any:
        await ensure_topics(bootstrap, settings)
        producer = await EventProducer(settings, bootstrap, source=source, stream=stream).start()
        try:
            if total_bytes is None:
                columns: tuple[Any, ...] = (SpinnerColumn(), TextColumn("{task.description}: {task.completed:,} "
                                                                        "events"), TimeElapsedColumn())
            else:
                from rich.progress import DownloadColumn, TransferSpeedColumn

                columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           TimeElapsedColumn())
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task(source, total=total_bytes)
                await feed(producer, lambda n: progress.advance(task, n))
        finally:
            await producer.close(final=final)
        return producer.stats

    return asyncio.run(go())


@produce_app.command("flexnet")
def produce_flexnet_cmd(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Debug logs of one server.")],
    server: Annotated[str | None, typer.Option(help="The license server the logs come from.")] = None,
    org: Annotated[str | None, typer.Option(help="The organisation (default LICTEL_ORG).")] = None,
    tz: Annotated[str | None, typer.Option(help="The server's time zone (IANA name, e.g. Europe/Berlin); "
                                                "default: the zone the log names (a log that names none "
                                                "needs it).")] = None,
    date: Annotated[str | None, typer.Option(help="Date of lines before any date line (YYYY-MM-DD).")] = None,
    data_dir: DataDir = None,
    final: Annotated[bool, typer.Option(help="End with closing heartbeats: the input is complete.")] = True,
    follow: Annotated[bool, typer.Option("--follow", help="Keep reading the (one) log as it grows, across "
                                         "rotation and truncation, until Ctrl-C; resumes where it stopped.")] = False,
) -> None:
    """Parse FlexNet (FLEXlm) debug logs and send their events to the events topic."""
    from producers.flexnet import produce_flexnet

    settings = settings_for(data_dir)
    parser = _flexnet_parser(settings, files, server, org, tz, date, follow)
    if follow:
        if len(files) != 1:
            raise LictelError("--follow reads one log file (the live one, e.g. CITRIX.log)")
        _follow(settings, parser, files[0])
        return

    async def feed(producer: Any, advance: Callable[[int], None]) -> None:
        await produce_flexnet(producer, files, parser, on_progress=advance)

    _print_produce(_produce(settings, "flexnet", feed, sum(f.stat().st_size for f in files), final))
    _print_parse(parser)


def _follow(settings: Settings, parser: Any, path: Path) -> None:
    from lictel.broker import ensure_topics, resolve_bootstrap
    from producers.base import EventProducer
    from producers.flexnet_follow import Follower, checkpoint_path

    bootstrap = resolve_bootstrap(settings)
    checkpoint = checkpoint_path(settings.data_dir, parser.server, path)

    async def go() -> Any:
        await ensure_topics(bootstrap, settings)
        producer = await EventProducer(settings, bootstrap, source="flexnet").start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"following {esc(path)} (checkpoint {esc(checkpoint)}); Ctrl-C stops")
        try:
            with Progress(SpinnerColumn(), TextColumn("{task.completed:,} lines"), TimeElapsedColumn(),
                          console=console, transient=True) as progress:
                task = progress.add_task("", total=None)
                await Follower(producer, parser, path, checkpoint,
                               on_lines=lambda n: progress.advance(task, n)).run(stop)
        finally:
            await producer.close(final=False)
        return producer.stats

    _print_produce(asyncio.run(go()))
    _print_parse(parser)


def _flexnet_parser(settings: Settings, files: list[Path] | None, server: str | None, org: str | None,
                    tz: str | None, date: str | None, follow: bool = False) -> Any:
    from producers.flexnet import FlexnetParser, check_zone

    if not server:
        raise LictelError("FlexNet logs need --server NAME: the license server they come from")
    if files and not follow:
        check_zone(files, tz)  # a log read in the wrong zone is off by hours: refuse before sending
    first = None
    if date:
        try:
            first = dt.date.fromisoformat(date)
        except ValueError:
            raise LictelError(f"--date {date!r} is not a date like 2026-03-02") from None
    return FlexnetParser(org=org or settings.org, server=server, tz=tz, date=first)


def _print_parse(parser: Any) -> None:
    st = parser.stats
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(st.events.items())) or "none"
    console.print(f"  read {st.lines:,} log lines: events {kinds}")
    if parser.tz_origin:
        console.print(f"  time zone {esc(parser.tz.key)} (from {esc(parser.tz_origin)})")
    restarts, rereads = st.events.get("RESTART", 0), st.events.get("REREAD", 0)
    if restarts or rereads:
        console.print(f"  {restarts:,} daemon restart event(s) (checkouts released), {rereads:,} license "
                      "reread(s) (checkouts kept)")
    unsupported = st.events.get("UNSUPPORTED", 0)
    if unsupported:
        console.print(f"  {unsupported:,} request(s) for features the server does not serve (UNSUPPORTED: not "
                      "denials; `lictel report denials` lists them)")
    for reason, n in st.skipped.most_common():
        console.print(f"    {n:>9,} skipped: {esc(reason)}")
    for w in st.warnings[:10]:
        console.print(f"  [yellow]warning:[/] {esc(w)}")
    if len(st.warnings) > 10:
        console.print(f"  [yellow]... and {len(st.warnings) - 10} more warnings[/]")


@produce_app.command("sessions")
def produce_sessions_cmd(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                help="Session exports of one broker site (OData JSON or CSV).")],
    site: Annotated[str | None, typer.Option(help="The broker site (delivery controller) they come from.")] = None,
    feature: Annotated[str, typer.Option(help="The license feature the sessions imply.")] = "XDT_PLT_CCU",
    org: Annotated[str | None, typer.Option(help="The organisation (default LICTEL_ORG).")] = None,
    tz: Annotated[str, typer.Option(help="Zone of CSV times without an offset (IANA name).")] = "UTC",
    data_dir: DataDir = None,
    final: Annotated[bool, typer.Option(help="End with closing heartbeats: the input is complete.")] = True,
) -> None:
    """Send the sessions of broker exports to the sessions topic; the stream derives the concurrent
    licenses they imply (series ``sessions``, LICTEL_SESSIONS_UNIT / LICTEL_SESSIONS_DISCONNECTED_HOLDS)."""
    from producers.sessions import produce_sessions

    settings = settings_for(data_dir)
    reader = _sessions_reader(settings, site, org, feature, tz)

    async def feed(producer: Any, advance: Callable[[int], None]) -> None:
        await produce_sessions(producer, files, reader, on_progress=advance)

    _print_produce(_produce(settings, "sessions", feed, sum(f.stat().st_size for f in files), final,
                            stream="sessions"))
    _print_sessions(reader)


def _sessions_reader(settings: Settings, site: str | None, org: str | None, feature: str, tz: str) -> Any:
    from producers.sessions import SessionExportReader

    if not site:
        raise LictelError("session exports need --site NAME: the broker site (delivery controller) they come from")
    return SessionExportReader(org or settings.org, site, feature, tz)


def _print_sessions(reader: Any) -> None:
    st = reader.stats
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(st.events.items())) or "none"
    console.print(f"  read {st.files} export(s), {st.records:,} records: {st.sessions:,} sessions "
                  f"({st.still_running:,} still running), {st.connections:,} connections; events {kinds}")
    for reason, n in st.skipped.most_common():
        console.print(f"    {n:>9,} skipped: {esc(reason)}")


@produce_app.command("simulate")
def produce_simulate_cmd(
    data_dir: DataDir = None, users: Users = 2000, servers: Servers = 3, days: Days = 7,
    seed: Seed = 42, start: Start = "2026-03-02",
) -> None:
    """Send a simulated estate's events to the events topic."""
    from producers.simulate import simulate

    settings = settings_for(data_dir)
    spec = _sim_spec(settings.org, users, servers, days, seed, start)

    async def feed(producer: Any, advance: Callable[[int], None]) -> None:
        for i, event in enumerate(simulate(spec), 1):
            await producer.send(event)
            if i % 2000 == 0:
                advance(2000)

    _print_produce(_produce(settings, "simulate", feed, None))


def _print_produce(stats: Any) -> None:
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_action.items()))
    out.print(f"sent {stats.events:,} events ({kinds}) in {stats.messages:,} messages; "
              f"{stats.dead_letters:,} dead-lettered")
    for err in stats.errors[:10]:
        out.print(f"  dead letter: {esc(err)}")


@app.command()
def stream(
    data_dir: DataDir = None,
    worker_id: Annotated[int | None, typer.Option(
        help="A stable id, each worker its own. With static membership (LICTEL_GROUP_STATIC, on with Kafka) "
             "a worker restarted within the session timeout takes its partitions back without a rebalance.")] = None,
    loglevel: Annotated[str, typer.Option(envvar="LICTEL_LOGLEVEL")] = "WARNING",
    dup_group: DupGroup = None,
) -> None:
    """Run one stream worker (Faust) until stopped."""
    import socket

    from lictel.broker import resolve_bootstrap
    from lictel.pipeline import with_license_rules
    from streams.app import run_worker

    settings = with_license_rules(with_dup_group(settings_for(data_dir), dup_group)).with_group_defaults()
    bootstrap = resolve_bootstrap(settings)
    name = f"worker-{worker_id}" if worker_id is not None else f"worker-{socket.gethostname()}"
    per_worker = settings.model_copy(update={"data_dir": settings.data_dir / name, "kafka_bootstrap": bootstrap})
    sys.argv = [sys.argv[0]]  # Faust's worker reads argv
    run_worker(per_worker, bootstrap, loglevel, settings.group_instance("stream", worker_id))


@app.command()
def sink(
    data_dir: DataDir = None,
    sink_id: Annotated[int | None, typer.Option(
        help="A stable id. With static membership (LICTEL_GROUP_STATIC, on with Kafka) a sink restarted "
             "within the session timeout takes its partitions back without a rebalance.")] = None,
) -> None:
    """Run the ClickHouse sink until stopped (SIGTERM/SIGINT flush and exit)."""
    from lictel.broker import resolve_bootstrap
    from lictel.warehouse import migrate
    from sinks.clickhouse import ClickHouseSink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_for(data_dir).with_group_defaults()
    bootstrap = resolve_bootstrap(settings)

    async def go() -> None:
        from lictel import metrics

        s = ClickHouseSink(settings, bootstrap, group_instance_id=settings.group_instance("sink", sink_id))
        metrics.serve("sink", s.counters, settings.metrics_port, settings.data_dir,
                      gauges=frozenset({"final_upto_seconds"}), host=settings.metrics_host, extra=s.live)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, s.stop.set)
        web: asyncio.Task[None] | None = None
        if settings.serve_port:
            # The sink owns the embedded warehouse: it serves the dashboard and API on live data.
            from lictel.cli_serve import api_server

            with s.lock:
                migrate(s.client, settings)
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


@db_app.command("migrate")
def db_migrate(
    data_dir: DataDir = None,
    cluster: Annotated[str | None, typer.Option(help="Emit ON CLUSTER / Replicated DDL for this cluster.")] = None,
    print_only: Annotated[bool, typer.Option("--print", help="Print the DDL instead of applying it.")] = False,
) -> None:
    """Apply pending ClickHouse migrations (idempotent)."""
    from lictel.warehouse import connect, migrate, migration_files, render

    settings = settings_for(data_dir)
    if print_only:
        for _, _, path in migration_files():
            for stmt in render(path, settings, cluster):
                out.print(stmt + ";\n")
        return
    applied = migrate(connect(settings), settings, cluster)
    out.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


# --------------------------------------------------------------------------- export / report


@export_app.command("usage")
def export_usage(
    data_dir: DataDir = None,
    level: Annotated[str, typer.Option(help="pool (per server) or estate (summed over servers).")] = "pool",
    granularity: Annotated[str, typer.Option(help="minute, hour, day or month.")] = "minute",
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    feature: Annotated[str | None, typer.Option(help="Only this feature.")] = None,
    source: Annotated[str, typer.Option(help="license (what license servers logged) or sessions (what "
                                              "session exports imply; server = broker site).")] = "license",
    measure: Annotated[str, typer.Option(help="checkouts (every checkout counts) or charged (licenses charged "
                                               "under the features' DUP_GROUP rules) for peak, low, avg and "
                                               "license_seconds.")] = "checkouts",
    tz: TzOpt = "UTC",
    server: Annotated[str | None, typer.Option(help="Only this license server (or broker site).")] = None,
    start: From = None,
    end: To = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    force: Force = False,
) -> None:
    """Print usage rows: org,server,feature,minute,peak,low,avg,license_seconds,checkouts,..."""
    from lictel.export import bounds_s, to_csv, to_json, usage_rows
    from lictel.warehouse import open_warehouse

    if fmt not in ("csv", "json"):
        raise LictelError(f"--format must be csv or json, not {fmt!r}")
    scope = _scope(org, feature, start, end, tz)
    settings = settings_for(data_dir)
    rows = usage_rows(open_warehouse(settings), settings.clickhouse_database, level, granularity, org, feature,
                      *bounds_s(scope.start, scope.end), source=source, measure=measure, tz=tz, server=server)
    text = to_csv(rows) if fmt == "csv" else to_json(rows)
    if output:
        write_file(output, text, force)
        console.print(f"wrote {len(rows):,} rows to {esc(output)}")
    else:
        sys.stdout.write(text)


@report_app.command("peak")
def report_peak(data_dir: DataDir = None, fmt: Fmt = "table",
                org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None) -> None:
    """Per feature: estate and per-server peak (checkouts and licenses charged), time-weighted
    average, license-hours, denials."""
    _check_format(fmt)
    settings = settings_for(data_dir)
    if fmt == "table":
        _print_summary(settings, org)
        return
    from lictel.analysis import Report
    from lictel.reports import peak_summary
    from lictel.warehouse import open_warehouse

    summary = peak_summary(open_warehouse(settings), settings.clickhouse_database, org)
    cols = ["org", "feature", "series", "server", "peak", "charged_peak", "dup_group", "peak_at", "avg",
            "license_hours", "denials"]
    rows = [[r.org, r.feature, r.source, r.server, r.peak, r.charged_peak, r.dup_group, r.peak_at, round(r.avg, 6),
             round(r.license_hours, 6), r.denials] for r in summary.rows]
    _emit(Report(f"License use {summary.period}", cols, rows), fmt)


@report_app.command("ud")
def report_ud(
    data_dir: DataDir = None,
    fmt: Fmt = "table",
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    feature: Annotated[str | None, typer.Option(help="Only this feature.")] = None,
    day: Annotated[str | None, typer.Option(help="Only this UTC day (YYYY-MM-DD).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="List who holds the licenses: the vendor rule's "
                                                            "device and user licenses and the optimal cover.")] = False,
) -> None:
    """User/device licensing: per org, _UD feature and day, the licenses the 90 days ending that day
    need: distinct users, the vendor's shared-device rule, and the optimum (minimum vertex cover)."""
    import json

    from lictel.analysis import Report
    from lictel.ud import parse_models, ud_report
    from lictel.warehouse import open_warehouse

    _check_format(fmt)
    settings = settings_for(data_dir)
    models = parse_models(settings.license_models)
    when = _parse_day(day, "--day") if day else None
    with console.status("computing 90-day windows"):
        rows = ud_report(open_warehouse(settings), settings.clickhouse_database, models, org, feature, when, explain)
    report = Report("User/device licenses needed over the 90 days ending each day",
                    ["org", "feature", "day", "users_90d", "vendor_rule", "optimal"],
                    [[r.org, r.feature, r.day.isoformat(), r.users_90d, r.vendor_rule, r.optimal] for r in rows])
    if fmt == "csv" and explain:
        # One row per license held: who holds it under which rule.
        held: list[list[Any]] = []
        for r in rows:
            assert r.vendor is not None and r.cover is not None
            for rule, a in (("vendor_rule", r.vendor), ("optimal", r.cover)):
                held += [[r.org, r.feature, r.day.isoformat(), rule, "device", x] for x in a.devices]
                held += [[r.org, r.feature, r.day.isoformat(), rule, "user", x] for x in a.users]
        _emit(Report("", ["org", "feature", "day", "rule", "license", "holder"], held), fmt)
    elif fmt == "csv":
        _emit(report, fmt)
    elif fmt == "json":
        docs = report.dicts()
        for r, doc in zip(rows, docs, strict=True):
            if explain and r.vendor is not None and r.cover is not None:
                doc["vendor_assignment"] = {"devices": r.vendor.devices, "users": r.vendor.users}
                doc["optimal_assignment"] = {"devices": r.cover.devices, "users": r.cover.users}
        _deliver(json.dumps(docs, indent=1, ensure_ascii=False, default=str) + "\n", None)
    else:
        if not rows:
            out.print("no user/device license use stored (features ending in _UD, or set LICTEL_LICENSE_MODELS)")
            return
        _emit(report, fmt)
        for r in rows if explain else []:
            assert r.vendor is not None and r.cover is not None
            out.print(esc(f"{r.org} {r.feature} {r.day}: optimal {r.optimal}: devices "
                          f"{', '.join(r.cover.devices) or '-'}; users {', '.join(r.cover.users) or '-'}"))
            out.print(esc(f"  vendor rule {r.vendor_rule}: shared devices {', '.join(r.vendor.devices) or '-'}; "
                          f"users {', '.join(r.vendor.users) or '-'}"))


LevelOpt = Annotated[str, typer.Option("--level", help="estate (summed over servers) or pool (per server).")]
def _save_charts(report: Any, chart_dir: Path | None, prefix: str) -> None:
    if chart_dir is None:
        return
    chart_dir.mkdir(parents=True, exist_ok=True)
    for name, svg in report.charts.items():
        if svg:
            path = chart_dir / f"{prefix}-{''.join(c if c.isalnum() or c in '-_' else '_' for c in name)}.svg"
            write_file(path, svg, force=True)  # charts are regenerated in place
            console.print(f"chart: {esc(path)}")


@report_app.command("usage")
def report_usage(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                 start: From = None, end: To = None, tz: TzOpt = "UTC", level: LevelOpt = "estate",
                 granularity: Annotated[str, typer.Option(help="hour, day, week or month.")] = "day",
                 source: Annotated[str, typer.Option(help="license or sessions.")] = "license",
                 measure: Annotated[str, typer.Option(help="checkouts or charged (licenses charged under the "
                                                           "DUP_GROUP rules).")] = "checkouts") -> None:
    """Peak, low, time-weighted average and license-hours per hour, day, week or month."""
    from lictel.analysis import usage

    if granularity not in ("hour", "day", "week", "month"):
        raise LictelError(f"--granularity must be hour, day, week or month, not {granularity!r}")
    client, db, _ = _analysis(settings_for(data_dir))
    _emit(usage(client, db, _scope(org, feature, start, end, tz), level, granularity, source, measure), fmt)


@report_app.command("sizing")
def report_sizing(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                  start: From = None, end: To = None, tz: TzOpt = "UTC", level: LevelOpt = "estate",
                  histogram: Annotated[bool, typer.Option("--histogram", help="With --format csv: print the "
                                                          "utilisation histogram instead.")] = False) -> None:
    """Licenses needed to cover 95 %, 99 % and 100 % of the minutes, and the utilisation histogram."""
    from lictel.analysis import sizing

    client, db, _ = _analysis(settings_for(data_dir))
    _emit(sizing(client, db, _scope(org, feature, start, end, tz), level), fmt, 0 if histogram else None)


@report_app.command("overuse")
def report_overuse(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                   start: From = None, end: To = None, tz: TzOpt = "UTC") -> None:
    """Periods where use exceeds the entitlement (concurrent: estate peak; user/device: licenses assigned),
    with start, duration, magnitude and the 10 % overdraft band apart."""
    from lictel.analysis import overuse

    client, db, models = _analysis(settings_for(data_dir))
    _emit(overuse(client, db, _scope(org, feature, start, end, tz), models), fmt)


@report_app.command("denials")
def report_denials(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                   start: From = None, end: To = None, tz: TzOpt = "UTC",
                   by: Annotated[str, typer.Option(help="feature, user, host or hour (user and host: the "
                                                        "most denied first).")] = "feature",
                   within: Annotated[int, typer.Option(help="A denial followed by a checkout of the same user and "
                                                            "feature within this many minutes is not a true "
                                                            "denial.")] = 10) -> None:
    """Denials by feature, user, host or hour, with their reasons and the true denials; then the
    requests for features the server does not serve."""
    from lictel.analysis import denials

    client, db, _ = _analysis(settings_for(data_dir))
    _emit(denials(client, db, _scope(org, feature, start, end, tz), by, within), fmt)


@report_app.command("dormant")
def report_dormant(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                   start: From = None, end: To = None, tz: TzOpt = "UTC",
                   days: Annotated[int, typer.Option(help="User/device assignments unused this many days are "
                                                          "releasable.")] = 30,
                   ratio: Annotated[float, typer.Option(help="Concurrent entitlements whose 99th percentile stays "
                                                           "below this share are oversized.")] = 0.5,
                   held_hours: Annotated[float, typer.Option(help="Checkouts held this long are "
                                                                  "phantoms.")] = 24.0) -> None:
    """Releasable user/device assignments, oversized concurrent entitlements, phantom checkouts."""
    from lictel.analysis import dormant

    client, db, models = _analysis(settings_for(data_dir))
    _emit(dormant(client, db, _scope(org, feature, start, end, tz), models, days, ratio, held_hours), fmt)


@report_app.command("heatmap")
def report_heatmap(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                   start: From = None, end: To = None, tz: TzOpt = "UTC", level: LevelOpt = "estate",
                   chart_dir: Annotated[Path, typer.Option(help="Where the SVG charts go.")] = Path(".")) -> None:
    """Hour-of-week (UTC) average and peak per feature; one SVG chart per feature."""
    from lictel.analysis import heatmap

    client, db, _ = _analysis(settings_for(data_dir))
    rep = heatmap(client, db, _scope(org, feature, start, end, tz), level)
    _emit(rep, fmt)
    _save_charts(rep, chart_dir, "heatmap")


@report_app.command("forecast")
def report_forecast(data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                    start: From = None, end: To = None, tz: TzOpt = "UTC",
                    horizon: Annotated[int, typer.Option(help="Days ahead to look for the crossing.")] = 365,
                    chart_dir: Annotated[Path | None, typer.Option(help="Save SVG charts here.")] = None) -> None:
    """Daily peak trend with weekly seasonality, the day it reaches the entitlement, and its backtest error."""
    from lictel.analysis import forecast

    client, db, _ = _analysis(settings_for(data_dir))
    rep = forecast(client, db, _scope(org, feature, start, end, tz), horizon)
    _emit(rep, fmt)
    _save_charts(rep, chart_dir, "forecast")


@report_app.command("chargeback")
def report_chargeback(groups: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                                             help="user,group CSV.")],
                      data_dir: DataDir = None, fmt: Fmt = "table", org: OrgOpt = None, feature: FeatureOpt = None,
                      start: From = None, end: To = None, tz: TzOpt = "UTC") -> None:
    """License-hours and share of the peak by group, from a user → group CSV."""
    from lictel.analysis import chargeback, read_groups

    client, db, _ = _analysis(settings_for(data_dir))
    _emit(chargeback(client, db, _scope(org, feature, start, end, tz), read_groups(groups)), fmt)


@report_app.command("compliance")
def report_compliance(
    start: Annotated[str | None, typer.Option("--from", help="Start of the period (YYYY-MM-DD or ISO-8601; "
                                                             "default: the first stored minute).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End of the period, exclusive (default: after the last "
                                                         "stored minute).")] = None,
    data_dir: DataDir = None,
    fmt: Annotated[str, typer.Option("--format", help="html, table, csv or json.")] = "html",
    org: OrgOpt = None, feature: FeatureOpt = None, tz: TzOpt = "UTC",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    force: Force = False,
    pseudonymize: Annotated[bool, typer.Option("--pseudonymize", help="Replace user and device names with a keyed "
                                               "SHA-256 (key: LICTEL_PSEUDONYM_KEY).")] = False,
) -> None:
    """One self-contained period report for audits: per feature entitlement, peak, cover, overuse,
    denials; the periods, dormant licenses and user/device holders; charts embedded."""
    import os

    from lictel.analysis import compliance, pseudonymizer, to_html

    if fmt not in ("html", "table", "csv", "json"):
        raise LictelError(f"--format must be html, table, csv or json, not {fmt!r}")
    pseudo = pseudonymizer(os.environ.get("LICTEL_PSEUDONYM_KEY", "")) if pseudonymize else None
    client, db, models = _analysis(settings_for(data_dir))
    rep = compliance(client, db, _scope(org, feature, start, end, tz), models, pseudo)
    if fmt == "html":
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        _deliver(to_html(rep, stamp, pseudo is not None), output, force)
    else:
        _emit(rep, fmt, output=output, force=force)


def _print_summary(settings: Settings, org: str | None = None) -> None:
    from lictel.reports import compare_series, estate_gaps, peak_summary
    from lictel.timeutil import iso_s
    from lictel.warehouse import open_warehouse

    client = open_warehouse(settings)
    summary = peak_summary(client, settings.clickhouse_database, org)
    if not summary.rows:
        out.print("no usage stored yet")
        return
    table = Table(title=f"License use {summary.period}", title_justify="left")
    charged = any(r.dup_group != "NONE" for r in summary.rows)
    cols = [("org", "left"), ("feature", "left"), ("series", "left"), ("server", "left"), ("peak", "right"),
            ("peak at (UTC)", "left"), ("avg", "right"), ("license-hours", "right"), ("denials", "right")]
    if charged:
        cols[5:5] = [("charged", "right"), ("DUP_GROUP", "left")]
    for col, just in cols:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in summary.rows:
        style = "bold" if r.server == "(estate)" else ""
        extra = [f"{r.charged_peak:,}", r.dup_group] if charged else []
        table.add_row(_cell(r.org), _cell(r.feature), r.source, _cell(r.server), f"{r.peak:,}", *extra, r.peak_at,
                      f"{r.avg:,.2f}",
                      f"{r.license_hours:,.1f}", f"{r.denials:,}", style=style)
    out.print(table)
    out.print("avg is time-weighted over the whole period; estate peak is the peak of the summed "
              "concurrency, not the sum of server peaks.")
    if charged:
        out.print("peak counts every checkout; charged is the peak of the licenses charged under the feature's "
                  "DUP_GROUP rule (checkouts of one group share a license; NONE: every checkout is charged).")
    if any(r.source == "sessions" for r in summary.rows):
        rule = settings.session_rule
        out.print(f"series sessions: licenses implied by session exports (server = broker site), one per "
                  f"distinct {rule.unit} with a session, disconnected sessions "
                  f"{'holding' if rule.disconnected_holds else 'not holding'} theirs.")
        for c in compare_series(client, settings.clickhouse_database):
            verdict = (f"[yellow]implied above logged in {c.minutes_sessions_above:,} minute(s), by up to "
                       f"{c.max_excess:,} at {iso_s(c.max_excess_at)}[/]" if c.minutes_sessions_above
                       else "implied never above logged")
            out.print(f"{esc(c.org)} {esc(c.feature)}: logged peak {c.license_peak:,} vs implied peak "
                      f"{c.sessions_peak:,} over {c.minutes:,} minute(s) both cover; {verdict}")
    gaps = estate_gaps(client, settings.clickhouse_database)
    if gaps is not None:
        out.print(f"[yellow]{gaps.minutes:,} estate minute(s) between {iso_s(gaps.first)} and {iso_s(gaps.end)} "
                  f"miss a server's share[/] (a server that was idle, or sent its data after those minutes were "
                  f"final); recompute them with: {_commands()[0]} reconcile --data-dir {settings.data_dir} "
                  f"--from {iso_s(gaps.first)} --to {iso_s(gaps.end)}")
    out.print(f"data: {settings.clickhouse_url or settings.warehouse_dir} (database "
              f"{settings.clickhouse_database}: usage_minute, raw_events, dead_letters)")
    lictel_cmd, python_cmd = _commands()
    out.print(f"reports: {lictel_cmd} report sizing|overuse|denials|dormant|heatmap|forecast|ud|compliance|vendor-view "
              f"--data-dir {settings.data_dir} (docs/reports.md)")
    out.print(f"see it: {lictel_cmd} serve --no-auth --data-dir {settings.data_dir}, then open http://127.0.0.1:8787 "
              "(docs/api.md)")
    out.print(f"query it: {lictel_cmd} export usage --data-dir {settings.data_dir} --level estate "
              "--granularity hour --format csv")
    out.print(f"      or: {python_cmd} -c \"import chdb; print(chdb.query('SELECT * FROM "
              f"{settings.clickhouse_database}.usage_minute FINAL LIMIT 5', 'Pretty', "
              f"path='{settings.warehouse_dir}'))\"")


def _commands() -> tuple[str, str]:
    """How the user can call lictel and this Python again (``.venv/bin/...`` when not on PATH)."""
    import os
    import shutil

    def short(path: str) -> str:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path

    me = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    on_path = shutil.which("lictel")
    lictel_cmd = "lictel" if on_path and os.path.realpath(on_path) == me else short(
        os.path.join(os.path.dirname(sys.executable), "lictel"))
    python_cmd = "python" if shutil.which("python") == sys.executable else short(sys.executable)
    return lictel_cmd, python_cmd


@app.command()
def reconcile(
    data_dir: DataDir = None,
    start: Annotated[str | None, typer.Option("--from", help="First minute to recompute (ISO-8601 UTC).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End of the range, exclusive (ISO-8601 UTC).")] = None,
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    late: Annotated[bool, typer.Option("--late", help="The range of the stored late events.")] = False,
    dup_group: DupGroup = None,
) -> None:
    """Recompute minutes from raw events with the same engine and overwrite them (after late data,
    or to charge history under the current DUP_GROUP rules)."""
    from lictel.entitlements import license_rules
    from lictel.reconcile import late_range
    from lictel.reconcile import reconcile as run_reconcile
    from lictel.timeutil import iso_s, parse_ts
    from lictel.warehouse import open_warehouse

    settings = with_dup_group(settings_for(data_dir), dup_group)
    client = open_warehouse(settings)
    settings = settings.model_copy(update={"dup_group_licenses": license_rules(client, settings.clickhouse_database)})
    if late:
        found = late_range(client, settings.clickhouse_database)
        if found is None:
            out.print("no late events stored: nothing to reconcile")
            return
        t1, t2 = found
    else:
        if not start or not end:
            raise LictelError("give --from and --to (e.g. --from 2026-03-02T09:00:00Z), or --late")
        try:
            t1, t2 = parse_ts(start), parse_ts(end)
        except ValueError as exc:
            raise LictelError(f"--from/--to: {exc}") from None
    if t2 <= t1:
        raise LictelError("--to must be after --from")
    res = run_reconcile(client, settings.clickhouse_database, t1, t2, org, settings.session_rule,
                        settings.dup_rules, settings.partitions)
    upto = ""
    if res.final_end < res.end:
        upto = (f" (the stream has made minutes final up to {iso_s(res.final_end)}; later ones are left "
                f"for it to write)" if res.final_end > res.start else " (no minute of the range is final yet)")
    out.print(f"recomputed {iso_s(res.start)} to {iso_s(res.end)} from {res.events:,} raw events: "
              f"{res.rows_before:,} rows before, {res.rows_after:,} after, {res.rows_changed:,} changed{upto}")


@ent_app.command("import")
def entitlements_import(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                help="FlexNet license files (.lic) or contract CSVs (.csv).")],
    org: Annotated[str | None, typer.Option(help="The organisation (default LICTEL_ORG).")] = None,
    server: Annotated[str | None, typer.Option(help="The license server these files are installed on (what "
                                                    "`report vendor-view` counts as that server's installed "
                                                    "licenses); default: the organisation's, not one server's.")]
    = None,
    data_dir: DataDir = None,
) -> None:
    """Import entitlements; importing a file again replaces what it gave before."""
    from lictel.entitlements import load_file, store
    from lictel.warehouse import connect, migrate

    settings = settings_for(data_dir)
    found = [e for f in files for e in load_file(f, org or settings.org, server or "")]
    client = connect(settings)
    migrate(client, settings)
    store(client, settings.clickhouse_database, found)
    out.print(f"imported {len(found):,} entitlement(s) from {len(files)} file(s)")


@ent_app.command("rules")
def entitlements_rules(
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json, or env (the LICTEL_DUP_GROUP_LICENSES "
                                                      "value of the license-file rules).")] = "table",
    data_dir: DataDir = None,
    dup_group: DupGroup = None,
) -> None:
    """The DUP_GROUP rule each feature is charged under, and where it comes from."""
    from lictel import dupgroup
    from lictel.entitlements import license_rules
    from lictel.warehouse import open_warehouse

    settings = with_dup_group(settings_for(data_dir), dup_group)
    client = open_warehouse(settings)
    db = settings.clickhouse_database
    from_files = license_rules(client, db)
    if fmt == "env":
        sys.stdout.write(from_files + "\n")
        return
    from lictel.analysis import Report

    rules = dupgroup.DupRules.from_text(settings.dup_group, from_files)
    # Every feature that has data or an entitlement, and every feature a rule names.
    known = client.query(f"SELECT DISTINCT org, feature FROM {db}.usage_minute WHERE source = 'license' "
                         f"UNION DISTINCT SELECT DISTINCT org, feature FROM {db}.entitlements").result_rows
    keys = sorted({(str(o), str(f)) for o, f in known}
                  | {(k.split("/", 1)[0], k.split("/", 1)[1]) for k in dupgroup.parse(from_files)}
                  | {(org or settings.org, f) for f in dupgroup.parse(settings.dup_group) if f != "*"})
    rows = [[o, f, rules.rule(o, f), rules.origin(o, f), dupgroup.note(rules.rule(o, f))]
            for o, f in keys if org is None or o == org]
    notes = [f"every other feature: {rules.rule('', '')}"] + (
        [] if rules else ["no DUP_GROUP rules: every feature is charged as NONE (licenses charged = checkouts)"])
    _emit(Report("DUP_GROUP rules (licenses charged)", ["org", "feature", "dup_group", "from", "note"], rows,
                 notes), fmt)


@ent_app.command("list")
def entitlements_list(
    org: Annotated[str | None, typer.Option(help="Only this organisation.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    data_dir: DataDir = None,
) -> None:
    """Every stored entitlement."""
    import json as _json

    from lictel.entitlements import PERMANENT, listing
    from lictel.export import to_csv
    from lictel.warehouse import open_warehouse

    settings = settings_for(data_dir)
    rows = listing(open_warehouse(settings), settings.clickhouse_database, org)
    for r in rows:
        r["count"] = "uncounted" if r.pop("uncounted") else r["count"]
        r["expiry"] = "permanent" if r["expiry"] == PERMANENT else str(r["expiry"])
        r["start"] = "" if r["start"] is None else str(r["start"])
    if fmt == "json":
        sys.stdout.write(_json.dumps(rows, default=str) + "\n")
        return
    if fmt == "csv":
        sys.stdout.write(to_csv(rows, list(rows[0]) if rows else ["org", "feature", "count"]))
        return
    table = Table()
    for col in ("org", "feature", "vendor", "count", "start", "expiry", "overdraft", "kind", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(_cell(r[c]) for c in ("org", "feature", "vendor", "count", "start", "expiry", "overdraft",
                                             "kind")), f"{Path(r['source']).name}:{r['line']}")
    out.print(table if rows else "no entitlements stored yet (lictel entitlements import FILE)")


@app.command("config")
def config_cmd() -> None:
    """Every setting: its environment variable, default and meaning."""
    table = Table()
    table.add_column("variable")
    table.add_column("default")
    table.add_column("meaning")
    for var, default, doc in settings_help():
        table.add_row(var, default, doc)
    out.print(table)


def main() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError

    from lictel.procs import watch_lifeline

    watch_lifeline()  # a worker or sink started by `lictel run`/`up` stops when that process dies
    try:
        app()
    except LictelError as exc:
        console.print(f"[red]error:[/] {esc(exc)}")
        raise SystemExit(2) from None
    except DatabaseError as exc:
        console.print(f"[red]error:[/] ClickHouse refused a query: {esc(str(exc).splitlines()[0][:500])}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
