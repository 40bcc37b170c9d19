"""The pages of ``lictel serve``: the estate, a feature, a user/device feature, the data.

Server-rendered (Jinja2, autoescaped); each page carries the data of its first view as JSON, so it
paints without a second request, and its charts (Apache ECharts, installed from the npm registry by
``make web`` and served from ``/static``, never from a CDN) ask the API for more when the user
zooms or clicks. The pages read through the same functions as the CLI and the API.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import numpy as np
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from lictel.export import usage_rows
from lictel.holders import license_hours
from lictel.reports.common import DAYS, Scope, entitled_on, entitlements
from lictel.reports.denials import denials
from lictel.reports.forecast import daily_peaks, fit_trend
from lictel.reports.heatmap import heatmap
from lictel.rollups import CHARGED_PEAK_AND_FIRST, peak_and_first
from lictel.timeutil import MINUTE_US, US, iso_s
from lictel.ud import UD, license_model, ud_report

HERE = Path(__file__).parent
STATIC = HERE / "static"
COOKIE = "lictel_token"
SPARK_DAYS = 90

_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def add_pages(app: FastAPI, wh: Any, token_ok: Callable[[Request], bool], check_token: Callable[[str], bool],
              auth: bool) -> None:
    """The pages, the token prompt and the static assets on ``app``. ``wh`` is the API's warehouse."""
    if not (STATIC / "vendor" / "echarts.min.js").is_file():
        raise FileNotFoundError(f"the chart library is missing from {STATIC / 'vendor'}: run `make web` (npm ci of "
                                "web/package-lock.json) in the source tree")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def page(name: str, request: Request, **context: Any) -> HTMLResponse:
        html = _env.get_template(f"{name}.html").render(auth=auth, path=request.url.path, **context)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    def gate(request: Request) -> Response | None:
        if token_ok(request):
            return None
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return page("login", request, next=_local(next), error="")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token, target = form.get("token", [""])[0].strip(), _local(form.get("next", ["/"])[0])
        if not check_token(token):
            refused = page("login", request, next=target, error="That token is not one of LICTEL_API_TOKENS.")
            refused.status_code = 401
            return refused
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        max_age=12 * 3600)
        return resp

    @app.get("/logout", include_in_schema=False)
    def logout() -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    @app.get("/", include_in_schema=False)
    def estate_page(request: Request) -> Response:
        if (r := gate(request)) is not None:
            return r
        data = wh.run(lambda c, db: estate(c, db, wh.models))
        return page("estate", request, **data)

    @app.get("/feature", include_in_schema=False)
    def feature_page(request: Request, org: str, feature: str, tz: str = "UTC") -> Response:
        if (r := gate(request)) is not None:
            return r
        wh.check(org, None, feature)
        data = wh.run(lambda c, db: feature_view(c, db, org, feature, tz))
        return page("feature", request, org=org, feature=feature, tz=tz, data=script_json(data), **data["summary"])

    @app.get("/ud", include_in_schema=False)
    def ud_page(request: Request, org: str, feature: str) -> Response:
        if (r := gate(request)) is not None:
            return r
        wh.check(org, None, feature)
        rows = wh.run(lambda c, db: ud_report(c, db, wh.models, org, feature))
        series = [[r.day.isoformat(), r.users_90d, r.vendor_rule, r.optimal] for r in rows]
        return page("ud", request, org=org, feature=feature, data=script_json({"series": series}),
                    days=len(series))

    @app.get("/vendor", include_in_schema=False)
    def vendor_page(request: Request, org: str | None = None, days: int = 30) -> Response:
        if (r := gate(request)) is not None:
            return r
        who = org or wh.settings.org
        wh.check(who)
        return page("vendor", request, org=who, **wh.run(lambda c, db: vendor_summary(c, db, who, wh.models,
                                                                                        max(1, min(days, 400)))))

    @app.get("/data", include_in_schema=False)
    def data_page(request: Request) -> Response:
        if (r := gate(request)) is not None:
            return r
        return page("data", request, **wh.run(data_view))


def script_json(value: Any) -> Markup:
    """JSON to put inside <script type="application/json">: no '<', '>' or '&' that could end it."""
    text = json.dumps(value, ensure_ascii=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _local(target: str) -> str:
    """Only a path of this server: never a redirect elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


# --------------------------------------------------------------------------- the estate


def estate(client: Client, db: str, models: dict[str, str]) -> dict[str, Any]:
    """One line per organisation and feature over the last 90 days of data: peak in licenses
    charged, entitled, utilisation, days over entitlement, denials, the daily peaks."""
    (last, n), = client.query(f"SELECT toUnixTimestamp(max(minute)), count() FROM {db}.usage_minute "
                              f"WHERE level = 'estate' AND source = 'license'").result_rows
    if not n:
        return {"rows": [], "period": ""}
    (first,), = client.query(f"SELECT toUnixTimestamp(min(minute)) FROM {db}.usage_minute WHERE level = 'estate' "
                             f"AND source = 'license'").result_rows
    last_day = dt.datetime.fromtimestamp(int(last), dt.UTC).date()
    first_day = max(last_day - dt.timedelta(days=SPARK_DAYS - 1), dt.datetime.fromtimestamp(int(first), dt.UTC).date())
    span = (last_day - first_day).days + 1
    result = client.query(
        f"SELECT org, feature, toDate(minute) AS d, {CHARGED_PEAK_AND_FIRST}, sum(denials) FROM {db}.usage_minute "
        f"FINAL WHERE level = 'estate' AND source = 'license' AND minute >= toDateTime({{a:Int64}}, 'UTC') "
        f"GROUP BY org, feature, d", parameters={"a": int(dt.datetime.combine(first_day, dt.time(), dt.UTC)
                                                          .timestamp())})
    days: dict[tuple[str, str], dict[dt.date, tuple[int, int, int]]] = defaultdict(dict)
    for o, f, d, enc, den in result.result_rows:
        peak, at = peak_and_first(enc)
        days[(str(o), str(f))][d] = (peak, at, int(den))
    ents = entitlements(client, db, None)
    rows = []
    for (o, f), by_day in sorted(days.items()):
        series = [by_day.get(first_day + dt.timedelta(days=k), (0, 0, 0))[0] for k in range(span)]
        best = max(by_day.items(), key=lambda kv: (kv[1][0], -kv[1][1]))
        items = ents.get((o, f), [])
        entitled = entitled_on(items, last_day)
        over = sum(1 for d, (p, _, _) in by_day.items() if items and p > entitled_on(items, d))
        rows.append({
            "org": o, "feature": f, "model": license_model(f, models), "peak": best[1][0],
            "peak_at": iso_s(best[1][1]) if best[1][0] else "", "entitled": entitled or None,
            "utilisation": round(100 * best[1][0] / entitled, 1) if entitled else None, "days_over": over,
            "denials": sum(x[2] for x in by_day.values()), "spark": sparkline(series),
            "link": ("/ud" if license_model(f, models) == UD else "/feature") + f"?org={quote(o)}&feature={quote(f)}",
        })
    return {"rows": rows, "period": f"{first_day} to {last_day} (UTC days)", "span": span}


def sparkline(values: list[int], width: int = 180, height: int = 28) -> str:
    """An SVG path of ``values`` scaled into ``width`` x ``height`` (empty when all are 0)."""
    top = max(values, default=0)
    if not top:
        return ""
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{'M' if k == 0 else 'L'}{k * step:.1f},{height - 1 - (height - 2) * v / top:.1f}"
                    for k, v in enumerate(values))


# --------------------------------------------------------------------------- a feature


def feature_view(client: Client, db: str, org: str, feature: str, tz: str) -> dict[str, Any]:
    """What the feature page shows first: the daily estate peaks (licenses charged), the entitlement,
    the ten highest peak minutes, the hour-of-week heatmap, the forecast with its band, the top
    users and hosts of the last 30 days, the denials by reason and user."""
    scope = Scope(org, feature, tz=tz)
    days = usage_rows(client, db, "estate", "day", org, feature, measure="charged", tz=tz)
    if not days:
        return {"summary": {"empty": True}}
    items = entitlements(client, db, org).get((org, feature), [])
    today = dt.datetime.now(dt.UTC).date()
    peaks = client.query(
        f"SELECT toDate(minute) AS d, {CHARGED_PEAK_AND_FIRST} AS enc FROM {db}.usage_minute FINAL "
        f"WHERE level = 'estate' AND source = 'license' AND org = {{org:String}} AND feature = {{feature:String}} "
        f"GROUP BY d ORDER BY enc DESC LIMIT 10", parameters={"org": org, "feature": feature}).result_rows
    markers = [[iso_s(at), peak] for peak, at in (peak_and_first(enc) for _, enc in peaks) if peak]
    heat = heatmap(client, db, scope)
    grid = [[h, DAYS.index(r[2]), r[3 + h]] for r in heat.rows for h in range(24)]
    forecast = _forecast(client, db, scope)
    last = max(int(dt.datetime.fromisoformat(r["minute"].replace("Z", "+00:00")).timestamp()) for r in days) * US
    start, end = last - 29 * 86_400 * US, last + 86_400 * US
    top_users = [[n, round(h, 2), k] for n, h, k in license_hours(client, db, org, feature, start, end, "user")[:10]]
    top_hosts = [[n, round(h, 2), k] for n, h, k in license_hours(client, db, org, feature, start, end, "host")[:10]]
    by_user = denials(client, db, scope, by="user")
    reasons = client.query(
        f"SELECT ifNull(reason, '(none)') AS r, count() FROM {db}.raw_events FINAL WHERE action = 'DENIED' "
        f"AND org = {{org:String}} AND feature = {{feature:String}} GROUP BY r ORDER BY count() DESC LIMIT 10",
        parameters={"org": org, "feature": feature}).result_rows
    # Entitled today, or on the last day of data when that is history.
    entitled = entitled_on(items, today) or entitled_on(items, dt.date.fromisoformat(days[-1]["minute"][:10]))
    return {
        "summary": {"empty": False, "peak": max(r["peak"] for r in days), "entitled": entitled or None,
                    "first": days[0]["minute"][:10], "last": days[-1]["minute"][:10],
                    "top_users": top_users, "top_hosts": top_hosts,
                    "denials_by_user": [[r[2], r[3], r[4]] for r in by_user.rows[:15]],
                    "denial_reasons": [[str(r), int(n)] for r, n in reasons],
                    "forecast_note": forecast["note"]},
        "daily": [[r["minute"], r["peak"]] for r in days], "entitled": entitled or None, "peaks": markers,
        "heatmap": grid, "forecast": forecast, "tz": tz, "org": org, "feature": feature,
        "period": [days[0]["minute"], iso_s(last + 86_400 * US)],
    }


def _forecast(client: Client, db: str, scope: Scope, horizon: int = 90) -> dict[str, Any]:
    """The daily peak's trend ahead, with a band of 1.96 standard deviations of the fit's residuals."""
    series = next(iter(daily_peaks(client, db, scope).values()), [])
    if len(series) < 14:
        return {"note": f"too little history for a forecast ({len(series)} days; 14 needed)", "points": []}
    fit = fit_trend([(d, float(v)) for d, v in series])
    spread = 1.96 * float(np.std([v - fit.predict(d) for d, v in series]))
    last = series[-1][0]
    points = []
    for k in range(1, horizon + 1):
        d = last + dt.timedelta(days=k)
        y = max(fit.predict(d), 0.0)
        points.append([d.isoformat(), round(y, 2), round(max(y - spread, 0.0), 2), round(y + spread, 2)])
    slope = 30 * fit.slope
    return {"note": f"trend {slope:+.1f} licenses per 30 days; band: 95 % of the past days' deviation from the fit "
                    f"(±{spread:.1f})", "points": points}


# --------------------------------------------------------------------------- the vendor's view


def vendor_summary(client: Client, db: str, org: str, models: dict[str, str], days: int) -> dict[str, Any]:
    """Per server and feature, the largest daily figures the compliance upload will carry over the
    last ``days`` days of data; and the vendor's imported figures against ours, when there are any."""
    from lictel.vendor.diff import vendor_diff
    from lictel.vendor.files import stored
    from lictel.vendor.view import vendor_view

    (last,), = client.query(f"SELECT toUnixTimestamp(max(minute)) FROM {db}.usage_minute WHERE org = {{org:String}} "
                            f"AND level = 'pool' AND source = 'license'", parameters={"org": org}).result_rows
    if not last:
        return {"rows": [], "diff": None, "period": ""}
    last_day = dt.datetime.fromtimestamp(int(last), dt.UTC).date()
    first_day = last_day - dt.timedelta(days=days - 1)
    best: dict[tuple[str, str], list[Any]] = {}
    for r in vendor_view(client, db, models, org, None, None, first_day, last_day):
        cell = best.setdefault((r.server, r.feature), [r.model, 0, "", 0, 0, r.installed])
        if r.count_used_max > cell[1]:
            cell[1], cell[2] = r.count_used_max, r.day.isoformat()
        cell[3] = max(cell[3], r.ccu_devices)
        cell[4] = max(cell[4], r.ud_licensees)
        cell[5] = max(cell[5], r.installed)
    rows = [[srv, f, *cell] for (srv, f), cell in sorted(best.items())]
    samples = stored(client, db, org)
    diff = vendor_diff(client, db, org, samples, models) if samples else None
    return {"rows": rows, "period": f"{first_day} to {last_day} (UTC days)",
            "diff": None if diff is None else {"notes": diff.notes, "columns": diff.columns, "rows": diff.rows[:500],
                                               "more": max(0, len(diff.rows) - 500)}}


# --------------------------------------------------------------------------- the data


def data_view(client: Client, db: str) -> dict[str, Any]:
    """Servers, sources, dead letters, late events, and the last final minute of every server."""
    final = {(str(o), str(s)): int(m) * US for o, s, m in client.query(
        f"SELECT org, server, toUnixTimestamp(max(minute)) FROM {db}.usage_minute WHERE level = 'pool' "
        f"GROUP BY org, server").result_rows}
    servers = [[o, s, iso_s(int(a)), iso_s(int(b)), int(n), iso_s(final[(o, s)] + MINUTE_US) if (o, s) in final
                else ""] for o, s, a, b, n in client.query(
        f"SELECT org, server, toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts)), count() "
        f"FROM {db}.raw_events GROUP BY org, server ORDER BY org, server").result_rows]
    sources = [[s, int(n), iso_s(int(a)), iso_s(int(b))] for s, n, a, b in client.query(
        f"SELECT source, count(), toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts)) "
        f"FROM {db}.raw_events GROUP BY source ORDER BY source LIMIT 500").result_rows]
    dead = [[st, s, int(n), iso_s(int(t)), r] for st, s, n, t, r in client.query(
        f"SELECT stage, source, count(), toUnixTimestamp64Micro(max(ts)), any(reason) FROM {db}.dead_letters "
        f"GROUP BY stage, source ORDER BY count() DESC LIMIT 200").result_rows]
    late = [[o, s, int(n), iso_s(int(t))] for o, s, n, t in client.query(
        f"SELECT org, server, count(), toUnixTimestamp64Micro(max(detected_at)) FROM {db}.late_events FINAL "
        f"GROUP BY org, server ORDER BY org, server").result_rows]
    return {"servers": servers, "sources": sources, "dead": dead, "late": late,
            "dead_total": sum(r[2] for r in dead), "late_total": sum(r[2] for r in late)}

