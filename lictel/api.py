"""lictel's HTTP API (``lictel serve``): the stored figures as JSON, or CSV where an answer is rows.

Read-only, under ``/api/v1``, every route behind ``Authorization: Bearer TOKEN`` (the tokens of
``LICTEL_API_TOKENS``, each compared in constant time) unless the server was started with
``--no-auth`` on a loopback address. ``/healthz`` answers without a token (for load balancers and
container health checks). OpenAPI at ``/docs`` and ``/openapi.json``.

Every query is parameterised: nothing a client sends is formatted into SQL. Filters are checked
before a report runs: an unknown organisation, server or feature is a 404 naming it and what is
stored; a malformed date or option is a 422 naming the parameter. The embedded warehouse (chDB)
serves one process, so the routes share one client, one query at a time.
"""

from __future__ import annotations

import datetime as dt
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any, cast

from clickhouse_connect.driver.client import Client
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from lictel import __version__
from lictel.alerts import history
from lictel.config import Settings
from lictel.errors import LictelError
from lictel.export import COLUMNS as USAGE_COLUMNS
from lictel.export import bounds_s, json_row, to_csv, usage_rows
from lictel.holders import distinct_per_day, holders_at, license_hours
from lictel.render.text import api_document, report_csv
from lictel.reports.common import IN_ORDER, Report, Scope, entitled_on, entitlements
from lictel.reports.denials import denials
from lictel.reports.forecast import forecast
from lictel.reports.overuse import overuse
from lictel.reports.sizing import sizing
from lictel.reports.summary import peak_summary
from lictel.timeutil import MINUTE_US, WHEN_HINT, iso_in, iso_s, local_date, local_midnight_us, parse_when, zone
from lictel.ud import parse_models, ud_report
from lictel.vendor.view import DETAIL_COLUMNS, Boundary, vendor_view
from lictel.web import COOKIE, add_pages

_CATALOG_TTL_S = 300.0
_CACHED = ("/api/v1/", "/feature", "/ud", "/vendor", "/data")
_CACHE_ENTRIES = 256
_CACHE_MAX_BYTES = 16 << 20


class Warehouse:
    """The one client of this process, used by one request at a time, and what is stored (orgs,
    servers, features), re-read every few minutes and whenever a request names something it lacks."""

    def __init__(self, client: Client, settings: Settings, lock: threading.Lock | None = None) -> None:
        self.client, self.db, self.settings = client, settings.clickhouse_database, settings
        self.models = parse_models(settings.license_models)
        self.lock = lock or threading.Lock()
        self._catalog: tuple[float, set[str], set[str], set[str]] | None = None

    def run(self, fn: Callable[[Client, str], Any]) -> Any:
        with self.lock:
            try:
                return fn(self.client, self.db)
            except LictelError as exc:
                raise HTTPException(422, str(exc)) from None

    def version(self) -> tuple[Any, ...]:
        """What changes whenever stored data may have: the active parts of lictel's tables (any
        insert, merge or deletion makes new ones), and the UTC day (answers speak of "today")."""
        with self.lock:
            row = self.client.query(
                "SELECT max(modification_time), count(), groupBitXor(cityHash64(table, name)) FROM system.parts "
                "WHERE database = {db:String} AND active", parameters={"db": self.db}).result_rows[0]
        return (*row, dt.datetime.now(dt.UTC).date())

    def catalog(self, fresh: bool = False) -> tuple[set[str], set[str], set[str]]:
        now = time.monotonic()
        if fresh or self._catalog is None or now - self._catalog[0] > _CATALOG_TTL_S:
            with self.lock:
                rows = list(self.client.query(
                    f"SELECT org, server, feature FROM {self.db}.usage_minute WHERE level = 'pool' "
                    f"GROUP BY org, feature, server", settings=IN_ORDER).result_rows)
                rows += self.client.query(f"SELECT DISTINCT org, '', feature FROM {self.db}.entitlements").result_rows
            self._catalog = (now, {str(r[0]) for r in rows}, {str(r[1]) for r in rows if r[1]},
                             {str(r[2]) for r in rows})
        return self._catalog[1:]

    def check(self, org: str | None = None, server: str | None = None, feature: str | None = None) -> None:
        """404 for a filter that names nothing stored (looked up again before saying so: new data
        shows at once)."""
        orgs, servers, features = self.catalog()
        if (org and org not in orgs) or (server and server not in servers) or (feature and feature not in features):
            orgs, servers, features = self.catalog(fresh=True)
        for what, value, known in (("organisation", org, orgs), ("server", server, servers),
                                   ("feature", feature, features)):
            if value and value not in known:
                shown = ", ".join(sorted(known)[:20]) + (" ..." if len(known) > 20 else "")
                raise HTTPException(404, f"no {what} {value!r} is stored (stored: {shown or 'none'}); "
                                         f"/api/v1/features lists what is")


def create_app(warehouse: Warehouse, tokens: list[str], pages: bool = True) -> FastAPI:
    """The application; ``tokens`` empty means no authentication (the caller checked that it may);
    ``pages``: the web pages too (lictel.web), not only the API."""
    app = FastAPI(title="lictel", version=__version__, description="License usage measured by its owner: "
                  "minute usage, peaks, holders, denials, user/device licenses, the vendor's view.")
    secrets = [t.encode() for t in tokens]

    def check_token(given: str) -> bool:
        ok = False
        for s in secrets:  # every token is compared, so the time does not tell which one matched
            ok |= hmac.compare_digest(given.encode(), s)
        return ok

    def token_ok(request: Request) -> bool:
        """A valid bearer token in the header, or (for pages and their scripts) the prompt's cookie."""
        if not secrets:
            return True
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, given = header.partition(" ")
            return scheme.lower() == "bearer" and check_token(given.strip())
        return check_token(request.cookies.get(COOKIE, ""))

    def authorised(request: Request) -> None:
        if not token_ok(request):
            raise HTTPException(401, "a valid token is required: send 'Authorization: Bearer TOKEN' with a token "
                                     "of LICTEL_API_TOKENS", headers={"WWW-Authenticate": "Bearer"})

    wh = warehouse
    auth = [Depends(authorised)]
    cache: OrderedDict[str, tuple[tuple[Any, ...], bytes, dict[str, str]]] = OrderedDict()

    @app.middleware("http")
    async def answers_until_the_data_changes(request: Request, call_next: Any) -> Response:
        """A repeated question is answered from memory while the stored data is unchanged (checked
        on every request: a few milliseconds); only for a caller the route itself would admit."""
        path = request.url.path
        if (not wh.settings.api_cache or request.method != "GET" or not (path == "/" or path.startswith(_CACHED))
                or not token_ok(request)):
            return cast(Response, await call_next(request))
        version = await run_in_threadpool(wh.version)
        key = f"{path}?{request.url.query}"
        hit = cache.get(key)
        if hit is not None and hit[0] == version:
            cache.move_to_end(key)
            return Response(hit[1], headers=hit[2] | {"x-lictel-cache": "hit"})
        resp = cast(StreamingResponse, await call_next(request))
        body = b"".join([chunk async for chunk in resp.body_iterator])  # type: ignore[misc]
        headers = {k: v for k, v in resp.headers.items() if k.lower() != "content-length"}
        if resp.status_code == 200 and len(body) <= _CACHE_MAX_BYTES:
            cache[key] = (version, body, headers)
            while len(cache) > _CACHE_ENTRIES or sum(len(v[1]) for v in cache.values()) > 8 * _CACHE_MAX_BYTES:
                cache.popitem(last=False)
        return Response(body, status_code=resp.status_code, headers=headers)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        wh.run(lambda c, db: c.query("SELECT 1"))
        return {"status": "ok"}

    @app.get("/api/v1/features", dependencies=auth, summary="What is stored")
    def features(org: str | None = None, fmt: Fmt = "json") -> Response:
        """Per organisation, server and feature: the first and last stored minute, and the count
        entitled today (from imported license files and contracts; the organisation's total)."""
        wh.check(org)

        def q(c: Client, db: str) -> Report:
            scope = Scope(org)
            where, params = scope.where()
            rows = c.query(f"SELECT org, server, feature, toUnixTimestamp(min(minute)), toUnixTimestamp(max(minute)) "
                           f"FROM {db}.usage_minute WHERE level = 'pool' AND {where} GROUP BY org, feature, server "
                           f"ORDER BY org, server, feature", parameters=params, settings=IN_ORDER).result_rows
            ents = entitlements(c, db, org)
            today = dt.datetime.now(dt.UTC).date()
            return Report("Stored features", ["org", "server", "feature", "first_minute", "last_minute", "entitled"],
                          [[o, s, f, iso_s(int(a) * 1_000_000), iso_s(int(b) * 1_000_000),
                            entitled_on(ents.get((o, f), []), today)] for o, s, f, a, b in rows])

        return _answer(wh.run(q), fmt)

    @app.get("/api/v1/usage", dependencies=auth, summary="Usage rows, as `lictel export usage`")
    def usage(level: Annotated[str, Query(pattern="^(pool|estate)$")] = "estate",
              granularity: Annotated[str, Query(pattern="^(minute|hour|day|week|month)$")] = "day",
              org: str | None = None, server: str | None = None, feature: str | None = None,
              start: From = None, end: To = None,
              measure: Annotated[str, Query(pattern="^(checkouts|charged)$")] = "checkouts",
              source: Annotated[str, Query(pattern="^(license|sessions)$")] = "license",
              tz: str = "UTC", fmt: Fmt = "json") -> Response:
        """The rows of ``lictel export usage`` for the same filters: exactly its columns and values
        (``avg`` and ``license_seconds`` to six decimals)."""
        wh.check(org, server, feature)
        _zone(tz)
        t1, t2 = _range(start, end, tz)
        rows = wh.run(lambda c, db: usage_rows(c, db, level, granularity, org, feature, *bounds_s(t1, t2),
                                               source=source, measure=measure, tz=tz, server=server))
        if fmt == "csv":
            return PlainTextResponse(to_csv(rows), media_type="text/csv; charset=utf-8")
        return JSONResponse({"columns": USAGE_COLUMNS, "rows": [json_row(r) for r in rows]})

    @app.get("/api/v1/peak", dependencies=auth, summary="Peaks per feature and server")
    def peak(org: str | None = None, fmt: Fmt = "json") -> Response:
        """As ``lictel report peak``: per feature the estate line and one per server: the peak in
        checkouts and in licenses charged, when, the time-weighted average, license-hours, denials."""
        wh.check(org)
        summary = wh.run(lambda c, db: peak_summary(c, db, org))
        cols = ["org", "feature", "series", "server", "peak", "charged_peak", "dup_group", "peak_at", "avg",
                "license_hours", "denials"]
        return _answer(Report(f"License use {summary.period}", cols, [
            [r.org, r.feature, r.source, r.server, r.peak, r.charged_peak, r.dup_group, r.peak_at, round(r.avg, 6),
             round(r.license_hours, 6), r.denials] for r in summary.rows]), fmt)

    @app.get("/api/v1/holders", dependencies=auth, summary="Who held a feature at a minute")
    def holders(feature: str, minute: str, org: str | None = None, server: str | None = None,
                fmt: Fmt = "json") -> Response:
        """Per server, the instant of ``minute`` when the most licenses of ``feature`` were held (the
        minute's start counts what was carried in), and who held them: user, host, licenses, since."""
        org = _one_org(wh, org)
        wh.check(org, server, feature)
        at = _instant(minute, "minute")
        found = wh.run(lambda c, db: holders_at(c, db, org, feature, at, server))
        return _answer(Report(f"Holders of {feature} at {iso_s(at - at % MINUTE_US)}",
                              ["server", "instant", "user", "host", "count", "since"],
                              [[srv, iso_s(t), h.user, h.host, h.count, iso_s(h.since)]
                               for srv, t, held in found for h in held]), fmt)

    @app.get("/api/v1/users", dependencies=auth, summary="License-hours per user or host")
    def users(start: From = None, end: To = None, org: str | None = None, feature: str | None = None,
              by: Annotated[str, Query(pattern="^(user|host)$")] = "user",
              top: Annotated[int, Query(ge=1, le=100_000)] = 50, tz: str = "UTC", fmt: Fmt = "json") -> Response:
        """License-hours per user (or host) over the range, largest first, with the checkouts begun
        in it; the range defaults to the last 30 days of stored data."""
        org = _one_org(wh, org)
        wh.check(org, None, feature)
        t1, t2 = _default_range(wh, org, start, end, tz, 30)
        rows = wh.run(lambda c, db: license_hours(c, db, org, feature, t1, t2, by))[:top]
        return _answer(Report(f"License-hours per {by}, {iso_in(t1, tz)} to {iso_in(t2, tz)}",
                              [by, "license_hours", "checkouts"], [[n, round(h, 6), k] for n, h, k in rows]), fmt)

    @app.get("/api/v1/distinct", dependencies=auth, summary="Distinct users and hosts per feature per day")
    def distinct(start: From = None, end: To = None, org: str | None = None, feature: str | None = None,
                 tz: str = "UTC", fmt: Fmt = "json") -> Response:
        """Per feature and day (of ``tz``): the users and hosts that held a license of it at some
        instant of the day; the range defaults to the last 30 days of stored data."""
        org = _one_org(wh, org)
        wh.check(org, None, feature)
        t1, t2 = _default_range(wh, org, start, end, tz, 30)
        first, last = local_date(t1, tz), local_date(t2 - 1, tz)
        rows = wh.run(lambda c, db: distinct_per_day(c, db, org, feature, first, last, tz))
        return _answer(Report("Distinct users and hosts per feature and day", ["feature", "day", "users", "hosts"],
                              [[f, d.isoformat(), u, h] for f, d, u, h in rows]), fmt)

    def report_route(path: str, summary: str, make: Callable[[Client, str, Scope], Report]) -> None:
        def route(org: str | None = None, feature: str | None = None, start: From = None, end: To = None,
                  tz: str = "UTC", fmt: Fmt = "json") -> Response:
            wh.check(org, None, feature)
            _zone(tz)
            t1, t2 = _range(start, end, tz)
            return _answer(wh.run(lambda c, db: make(c, db, Scope(org, feature, t1, t2, tz))), fmt)

        route.__doc__ = summary
        app.get(f"/api/v1/{path}", dependencies=auth, summary=summary, name=path)(route)

    report_route("denials", "Denials per feature: count, users, reasons (as `lictel report denials`)",
                 lambda c, db, s: denials(c, db, s))
    report_route("sizing", "Licenses that would have covered each share of the time (as `lictel report sizing`)",
                 lambda c, db, s: sizing(c, db, s))

    @app.get("/api/v1/overuse", dependencies=auth, summary="Stretches above the entitlement, a page at a time")
    def overuse_route(request: Request, org: str | None = None, feature: str | None = None, start: From = None,
                      end: To = None, tz: str = "UTC",
                      limit: Annotated[int, Query(ge=1, le=1_000_000, description="Periods per page")] = 1000,
                      offset: Annotated[int, Query(ge=0, description="Periods to skip")] = 0,
                      fmt: Fmt = "json") -> Response:
        """As ``lictel report overuse``, in order of org, feature and start: ``limit`` periods from
        ``offset`` (a busy year holds 100,000 of them). When more follow, the answer has a
        ``Link: <...>; rel="next"`` header; the features past a page are not computed for it."""
        wh.check(org, None, feature)
        _zone(tz)
        t1, t2 = _range(start, end, tz)
        rep = wh.run(lambda c, db: overuse(c, db, Scope(org, feature, t1, t2, tz), wh.models, offset + limit + 1))
        more = len(rep.rows) > offset + limit
        rep.rows = rep.rows[offset:offset + limit]
        answer = _answer(rep, fmt)
        if more:
            answer.headers["Link"] = f'<{request.url.include_query_params(offset=offset + limit)}>; rel="next"'
        return answer
    report_route("forecast", "Daily peak trend and when it reaches the entitlement (as `lictel report forecast`)",
                 lambda c, db, s: forecast(c, db, s))

    @app.get("/api/v1/ud", dependencies=auth, summary="User/device licenses over 90-day windows")
    def ud(org: str | None = None, feature: str | None = None, day: dt.date | None = None,
           explain: bool = False, fmt: Fmt = "json") -> Response:
        """As ``lictel report ud``: per organisation, _UD feature and day, the licenses the 90 days
        ending that day need: distinct users, the vendor's rule, and the optimum. ``explain`` (with
        ``day``): who holds them, under the vendor's rule and in the optimum."""
        wh.check(org, None, feature)
        if explain and day is None:
            raise HTTPException(422, "explain needs a day")
        rows = wh.run(lambda c, db: ud_report(c, db, wh.models, org, feature, day, explain))
        cols = ["org", "feature", "day", "users_90d", "vendor_rule", "optimal"]
        if explain:
            cols += ["vendor_devices", "vendor_users", "optimal_devices", "optimal_users"]
        return _answer(Report("User/device licenses needed over the 90 days ending each day", cols, [
            [r.org, r.feature, r.day.isoformat(), r.users_90d, r.vendor_rule, r.optimal]
            + (([" ".join(r.vendor.devices), " ".join(r.vendor.users), " ".join(r.cover.devices),
                 " ".join(r.cover.users)] if r.vendor and r.cover else ["", "", "", ""]) if explain else [])
            for r in rows]), fmt)

    @app.get("/api/v1/alerts", dependencies=auth, summary="Alerts that fired and resolved")
    def alerts(limit: Annotated[int, Query(ge=1, le=10_000)] = 100, fmt: Fmt = "json") -> Response:
        """The newest alert transitions (firing, resolved) with their delivery: delivered, attempts, error."""
        return _answer(wh.run(lambda c, db: history(c, db, limit)), fmt)

    @app.get("/api/v1/vendor-view", dependencies=auth, summary="What the compliance upload will report")
    def vendor(org: str | None = None, server: str | None = None, feature: str | None = None,
               start: Annotated[dt.date | None, Query(alias="from")] = None,
               end: Annotated[dt.date | None, Query(alias="to")] = None,
               window_start: Annotated[str, Query(pattern=r"^\d\d:\d\d$")] = "00:00", window_tz: str = "UTC",
               fmt: Fmt = "json") -> Response:
        """As ``lictel report vendor-view``: per server, feature and sample day, count_used_max,
        ccu_devices, ud_licensees and installed, computed from our own data (docs/vendor-view.md)."""
        wh.check(org, server, feature)
        try:
            boundary = Boundary.parse(window_start, window_tz)
        except LictelError as exc:
            raise HTTPException(422, str(exc)) from None
        rows = wh.run(lambda c, db: vendor_view(c, db, wh.models, org, server, feature, start, end, boundary))
        return _answer(Report(f"The vendor's view (windows from {boundary.label()})", DETAIL_COLUMNS,
                              [r.values(DETAIL_COLUMNS) for r in rows]), fmt)

    if pages:
        add_pages(app, wh, token_ok, check_token, bool(secrets))
    return app


# --------------------------------------------------------------------------- parameters and answers

Fmt = Annotated[str, Query(alias="format", pattern="^(json|csv)$", description="json or csv")]
From = Annotated[str | None, Query(alias="from", description="Start: YYYY-MM-DD (midnight of tz) or an ISO-8601 "
                                                             "instant with its offset")]
To = Annotated[str | None, Query(alias="to", description="End, exclusive: YYYY-MM-DD or an ISO-8601 instant")]


def _zone(tz: str) -> None:
    try:
        zone(tz)
    except ValueError as exc:
        raise HTTPException(422, f"tz: {exc}") from None


def _instant(text: str, name: str, tz: str = "UTC") -> int:
    try:
        return parse_when(text, tz)
    except ValueError as exc:
        raise HTTPException(422, f"{name} {text!r}: {exc} ({WHEN_HINT})") from None


def _range(start: str | None, end: str | None, tz: str) -> tuple[int | None, int | None]:
    t1 = _instant(start, "from", tz) if start else None
    t2 = _instant(end, "to", tz) if end else None
    if t1 is not None and t2 is not None and t2 <= t1:
        raise HTTPException(422, "to must be after from")
    return t1, t2


def _default_range(wh: Warehouse, org: str, start: str | None, end: str | None, tz: str,
                   days: int) -> tuple[int, int]:
    """``from``/``to``; by default the last ``days`` whole days (of ``tz``) of the stored data."""
    _zone(tz)
    t1, t2 = _range(start, end, tz)
    if t1 is not None and t2 is not None:
        return t1, t2
    if t2 is None:
        (last,), = wh.run(lambda c, db: c.query(
            f"SELECT toUnixTimestamp(max(minute)) FROM {db}.usage_minute WHERE org = {{org:String}}",
            parameters={"org": org}).result_rows)
        t2 = local_midnight_us(local_date(int(last) * 1_000_000, tz) + dt.timedelta(days=1), tz)
    if t1 is None:
        t1 = local_midnight_us(local_date(t2 - 1, tz) - dt.timedelta(days=days - 1), tz)
    return t1, t2


def _one_org(wh: Warehouse, org: str | None) -> str:
    """The organisation a per-holder answer is about: the one given, or the only one stored."""
    if org:
        return org
    orgs = sorted(wh.catalog()[0])
    if len(orgs) != 1:
        raise HTTPException(422, f"org is required: {len(orgs)} organisations are stored ({', '.join(orgs)})")
    return orgs[0]


def _answer(rep: Report, fmt: str) -> Response:
    if fmt == "csv":
        return PlainTextResponse(report_csv(rep), media_type="text/csv; charset=utf-8")
    return JSONResponse(api_document(rep))

