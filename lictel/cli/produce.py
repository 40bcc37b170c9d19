"""``lictel produce jsonl|flexnet|sessions|simulate``: send input to Kafka, with progress."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from lictel.cli.common import (
    CreateTopics,
    DataDir,
    Days,
    Seed,
    Servers,
    Start,
    Users,
    _sim_spec,
    console,
    esc,
    out,
    settings_for,
)
from lictel.config import Settings
from lictel.errors import LictelError

produce_app = typer.Typer(no_args_is_help=True, help="Send input to Kafka: license events (events topic) or "
                                                     "session exports (sessions topic).")


@produce_app.command("jsonl")
def produce_jsonl_cmd(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="JSON Lines files.")],
    data_dir: DataDir = None,
    final: Annotated[bool, typer.Option(help="End with closing heartbeats: the input is complete.")] = True,
    create_topics: CreateTopics = None,
) -> None:
    """Send canonical LicenseEvent JSON Lines to the events topic."""
    from producers.jsonl import produce_jsonl

    settings = settings_for(data_dir, kafka_create_topics=create_topics)

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
    create_topics: CreateTopics = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep reading the (one) log as it grows, across "
                                         "rotation and truncation, until Ctrl-C; resumes where it stopped.")] = False,
) -> None:
    """Parse FlexNet (FLEXlm) debug logs and send their events to the events topic."""
    from producers.flexnet import produce_flexnet

    settings = settings_for(data_dir, kafka_create_topics=create_topics)
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
    from lictel import logs, metrics
    from lictel.broker import ensure_topics, resolve_bootstrap
    from producers.base import EventProducer
    from producers.flexnet_follow import Follower, checkpoint_path

    logs.setup("producer", settings)
    bootstrap = resolve_bootstrap(settings)
    checkpoint = checkpoint_path(settings.data_dir, parser.server, path)
    lines = [0]

    async def go() -> Any:
        await ensure_topics(bootstrap, settings)
        producer = await EventProducer(settings, bootstrap, source="flexnet").start()
        st = producer.stats

        def health() -> dict[str, Any]:
            last = dt.datetime.fromtimestamp(st.last_ts / 1e6, dt.UTC).isoformat() if st.last_ts else None
            return {"file": str(path), "server": parser.server, "checkpoint": str(checkpoint), "lines": lines[0],
                    "last_event": last}

        metrics.serve("producer", lambda: {"lines": lines[0], "events": st.events, "messages": st.messages,
                                           "heartbeats": st.heartbeats, "dead_letters": st.dead_letters},
                      settings.metrics_port, settings.data_dir, host=settings.metrics_host, health=health)

        def read(n: int) -> None:
            lines[0] += n
            progress.advance(task, n)

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
                               on_lines=read).run(stop)
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
    create_topics: CreateTopics = None,
) -> None:
    """Send the sessions of broker exports to the sessions topic; the stream derives the concurrent
    licenses they imply (series ``sessions``, LICTEL_SESSIONS_UNIT / LICTEL_SESSIONS_DISCONNECTED_HOLDS)."""
    from producers.sessions import produce_sessions

    settings = settings_for(data_dir, kafka_create_topics=create_topics)
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
    seed: Seed = 42, start: Start = "2026-03-02", create_topics: CreateTopics = None,
) -> None:
    """Send a simulated estate's events to the events topic."""
    from producers.simulate import simulate

    settings = settings_for(data_dir, kafka_create_topics=create_topics)
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
