"""Daily peaks, their trend with weekly seasonality, and when they reach the entitlement."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from lictel.reports.common import LineChart, Report, Scope, entitled_on, entitlements


def daily_peaks(client: Client, db: str, scope: Scope) -> dict[tuple[str, str], list[tuple[dt.date, int]]]:
    """Per org and feature: the estate peak (licenses charged) of every day of ``scope.tz`` from its
    first to its last stored day."""
    where, params = scope.where()
    params["tz"] = scope.tz
    result = client.query(
        f"SELECT org, feature, toDate(minute, {{tz:String}}) AS d, max(charged_peak) FROM {db}.usage_minute FINAL "
        f"WHERE level = 'estate' AND source = 'license' AND {where} GROUP BY org, feature, d ORDER BY org, feature, d",
        parameters=params)
    raw: dict[tuple[str, str], dict[dt.date, int]] = defaultdict(dict)
    for o, f, d, p in result.result_rows:
        raw[(o, f)][d] = int(p)
    out = {}
    for key, by_day in raw.items():
        d, last = min(by_day), max(by_day)
        series = []
        while d <= last:
            series.append((d, by_day.get(d, 0)))
            d += dt.timedelta(days=1)
        out[key] = series
    return out


@dataclass(frozen=True)
class Fit:
    intercept: float
    slope: float  # per day
    weekday: tuple[float, ...]  # additive effect of Mon..Sun (Mon = 0)
    origin: dt.date

    def predict(self, d: dt.date) -> float:
        return self.intercept + self.slope * (d - self.origin).days + self.weekday[d.weekday()]


def fit_trend(series: list[tuple[dt.date, float]]) -> Fit:
    """Least squares: y = a + b·t + s[weekday], the weekday effects summing to zero."""
    origin = series[0][0]
    t = np.array([(d - origin).days for d, _ in series], dtype=float)
    y = np.array([v for _, v in series], dtype=float)
    dow = np.array([d.weekday() for d, _ in series])
    # Effects coded against the mean: columns for Mon..Sat, Sunday = -(sum of the others).
    x = np.zeros((len(series), 8))
    x[:, 0] = 1.0
    x[:, 1] = t
    for k in range(6):
        x[:, 2 + k] = np.where(dow == k, 1.0, np.where(dow == 6, -1.0, 0.0))
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    effects = [float(c) for c in coef[2:]]
    effects.append(-sum(effects))
    return Fit(float(coef[0]), float(coef[1]), tuple(effects), origin)


def backtest(series: list[tuple[dt.date, float]], holdout: int = 28) -> tuple[float, float] | None:
    """Fit on all but the last ``holdout`` days, predict them: (mean absolute error, MAPE %)."""
    if len(series) < holdout + 28:
        return None
    fit = fit_trend(series[:-holdout])
    errors = [abs(fit.predict(d) - v) for d, v in series[-holdout:]]
    mae = sum(errors) / holdout
    actual = [v for _, v in series[-holdout:]]
    pct = [e / a for e, a in zip(errors, actual, strict=True) if a > 0]
    return mae, 100 * sum(pct) / len(pct) if pct else float("nan")


def forecast(client: Client, db: str, scope: Scope, horizon_days: int = 365) -> Report:
    """Daily peak trend with weekly seasonality, and the day the forecast first reaches the entitlement."""
    ents = entitlements(client, db, scope.org)
    rows: list[list[Any]] = []
    rep = Report("Forecast of the daily peak", ["org", "feature", "days", "trend_per_30_days", "entitlement",
                                                "reaches_entitlement", "backtest_mae", "backtest_mape_pct"], rows,
                 ["method: least squares on the daily estate peak, a straight trend plus one additive effect per "
                  "weekday; backtest: fitted without the last 28 days, then compared with them."])
    for (o, f), series in sorted(daily_peaks(client, db, scope).items()):
        if len(series) < 14:
            rows.append([o, f, len(series), None, None, "too little history (14 days needed)", None, None])
            continue
        fit = fit_trend([(d, float(v)) for d, v in series])
        last = series[-1][0]
        ent = entitled_on(ents.get((o, f), []), last) or None
        reach = None
        if ent is not None:
            for k in range(0, horizon_days + 1):
                d = last + dt.timedelta(days=k)
                if fit.predict(d) >= ent:
                    reach = d.isoformat() if k else "already"
                    break
        bt = backtest([(d, float(v)) for d, v in series])
        rows.append([o, f, len(series), round(30 * fit.slope, 3), ent,
                     reach or (f"not within {horizon_days} days" if ent else "no entitlement"),
                     None if bt is None else round(bt[0], 3), None if bt is None else round(bt[1], 2)])
        future = [(last + dt.timedelta(days=k), max(fit.predict(last + dt.timedelta(days=k)), 0.0))
                  for k in range(1, min(horizon_days, 180) + 1)]
        lines = {"daily peak": [(d, float(v)) for d, v in series], "forecast": future}
        if ent:
            lines["entitlement"] = [(series[0][0], float(ent)), (future[-1][0], float(ent))]
        rep.charts[f"{o}-{f}"] = LineChart(f"{o} {f}: daily peak and forecast", lines)
    return rep


