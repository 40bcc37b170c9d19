"""The pages of `lictel serve` in a real browser (Debian Chromium driven by Playwright), over a data
dir filled by a real `lictel run` (a simulated estate of 15 days: broker, stream worker, sink,
chDB) with a contract that the peak exceeds. Each page's screenshot goes to docs/img/."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lictel.broker import EmbeddedBroker, free_port
from lictel.config import Settings
from lictel.warehouse import connect, migrate

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("LICTEL_CHROMIUM", "/usr/bin/chromium")
TOKEN = "pages-token-0123456789abcdef"
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTEL_")}
    return env | {"LICTEL_DATA_DIR": str(data), "COLUMNS": "200"} | extra


def _cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "lictel.cli", *args], env=env, text=True, capture_output=True,
                          timeout=600)
    assert proc.returncode == 0, f"lictel {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


class Server:
    def __init__(self, data: Path, tokens: str | None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--port", str(self.port)] + ([] if tokens else ["--no-auth"])
        self.proc = subprocess.Popen([sys.executable, "-m", "lictel.cli", *args],
                                     env=_env(data, **({"LICTEL_API_TOKENS": tokens} if tokens else {})),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"lictel serve did not answer:\n{self.proc.communicate()[0]}")
            time.sleep(0.2)

    def api(self, path: str) -> Any:
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        out = self.proc.communicate(timeout=30)[0]
        assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def server(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("pages") / "data"
    env = _env(data, **broker.client_env(), LICTEL_TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}", LICTEL_PARTITIONS="2")
    _cli(env, "run", "--users", "300", "--servers", "2", "--days", "15", "--seed", "11")
    contract = data.parent / "contract.csv"
    contract.write_text("feature,count,start,expiry,vendor,note\nXDT_PLT_CCU,100,2026-01-01,,CITRIX,three-year deal\n")
    _cli(env, "entitlements", "import", str(contract), "--org", "acme")
    s = Server(data, TOKEN)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is not at {CHROMIUM}: `make browser` installs it (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto(server.base + "/")
    pg.fill("input[name=token]", TOKEN)
    pg.click("button[type=submit]")
    pg.wait_for_url(server.base + "/")
    yield pg
    context.close()
    assert not errors, errors


def _shot(pg: Any, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(IMG / f"{name}.png"), full_page=True)


def _series_len(pg: Any, chart: str, index: int = 0) -> int:
    return int(pg.evaluate(f"lictelCharts[{chart!r}].getOption().series[{index}].data.length"))


def test_pages_need_a_token(browser: Any, server: Server) -> None:
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(server.base + "/feature?org=acme&feature=XDT_PLT_CCU")
    assert "/login?next=" in pg.url
    pg.fill("input[name=token]", "not-the-token-at-all")
    pg.click("button[type=submit]")
    assert pg.locator(".error").inner_text() == "That token is not one of LICTEL_API_TOKENS."
    pg.fill("input[name=token]", TOKEN)
    pg.click("button[type=submit]")
    pg.wait_for_url("**/feature?org=acme&feature=XDT_PLT_CCU")  # back where the prompt came from
    assert pg.locator("h1").inner_text().startswith("XDT_PLT_CCU")
    # The cookie opens the API to the page's scripts; a request without it is refused.
    assert pg.evaluate("fetch('/api/v1/features').then(r => r.status)") == 200
    pg.goto(server.base + "/logout")
    assert pg.evaluate("fetch('/api/v1/features').then(r => r.status)") == 401
    context.close()


def test_estate(page: Any, server: Server) -> None:
    rows = page.locator("#estate tbody tr")
    features = {r["feature"] for r in server.api("/api/v1/features")["rows"]}
    assert rows.count() == len(features) == 3
    ccu = page.locator("#estate tbody tr", has_text="XDT_PLT_CCU")
    cells = [c.strip() for c in ccu.locator("td").all_inner_texts()]
    peak = max(r["charged_peak"] for r in server.api("/api/v1/peak")["rows"]
               if r["feature"] == "XDT_PLT_CCU" and r["server"] == "(estate)")
    assert cells[2] == str(peak) and cells[4] == "100" and float(cells[5]) == round(100 * peak / 100, 1)
    assert int(cells[6]) > 0 and "over" in (ccu.get_attribute("class") or "")
    assert ccu.locator("svg.spark path").get_attribute("d")
    page.click("#estate th:has-text('peak')")  # sort by peak, ascending
    page.click("#estate th:has-text('peak')")  # then descending
    first = page.locator("#estate tbody tr").first.locator("td").nth(2).inner_text()
    assert int(first) == max(int(x) for x in page.locator("#estate tbody tr td:nth-child(3)").all_inner_texts())
    _shot(page, "estate")


def test_feature_zoom_and_holders_at_the_peak(page: Any, server: Server) -> None:
    page.goto(server.base + "/feature?org=acme&feature=XDT_PLT_CCU")
    page.wait_for_function("window.lictelCharts && lictelCharts.usage && lictelCharts.forecast")
    assert _series_len(page, "usage") >= 15 and _series_len(page, "usage", 1) == 10  # days; peak markers
    assert _series_len(page, "heatmap") == 7 * 24
    assert _series_len(page, "forecast", 1) == 90
    assert page.locator("text=Top users, last 30 days").count() == 1
    assert page.locator("section:has-text('Top users') tbody tr").count() == 10

    # Click the highest peak marker, as a user would: the holders of that minute appear.
    marker = page.evaluate("""() => {
        const c = lictelCharts.usage, s = c.getOption().series[1].data;
        const top = s.reduce((a, b) => (b[1] > a[1] ? b : a));
        const [x, y] = c.convertToPixel({seriesIndex: 1}, top);
        return {x, y, t: new Date(top[0]).toISOString(), peak: top[1]};
    }""")
    box = page.locator("#usage").bounding_box()
    page.mouse.click(box["x"] + marker["x"], box["y"] + marker["y"])
    page.wait_for_selector("#holders:not([hidden])")
    minute = marker["t"][:16] + ":00Z"
    held = page.locator("#holders-rows tr")
    per_server: dict[str, int] = {}
    for k in range(held.count()):
        server_name, _, _, _, n, _ = held.nth(k).locator("td").all_inner_texts()
        per_server[server_name] = per_server.get(server_name, 0) + int(n)
    # Each server's holders add up to that server's minute peak in the export (checkouts).
    to = (dt.datetime.fromisoformat(minute.replace("Z", "+00:00")) + dt.timedelta(minutes=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    export = server.api(f"/api/v1/usage?level=pool&granularity=minute&feature=XDT_PLT_CCU&from={minute}&to={to}")
    assert per_server == {r["server"]: r["peak"] for r in export["rows"] if r["peak"]}
    assert sum(per_server.values()) >= marker["peak"]  # charged <= checkouts
    _shot(page, "feature")

    # Zoom to six hours: the chart asks for minutes.
    page.evaluate("""(t) => lictelCharts.usage.dispatchAction({type: 'dataZoom', dataZoomIndex: 0,
        startValue: Date.parse(t) - 3 * 3600e3, endValue: Date.parse(t) + 3 * 3600e3})""", marker["t"])
    page.wait_for_function("""() => { const d = lictelCharts.usage.getOption().series[0].data;
        return d.length > 1 && d[1][0] - d[0][0] === 60000; }""")


def test_user_device_page_explains_a_day(page: Any, server: Server) -> None:
    page.goto(server.base + "/ud?org=acme&feature=XDT_ENT_UD")
    page.wait_for_function("window.lictelCharts && lictelCharts.udchart")
    days = _series_len(page, "udchart")
    ud = server.api("/api/v1/ud?org=acme&feature=XDT_ENT_UD")["rows"]
    assert days == len(ud) > 0
    box = page.locator("#udchart").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    page.wait_for_selector("#explain:not([hidden])")
    title = page.locator("#explain-title").inner_text()
    day = title[:10]
    want = next(r for r in ud if r["day"] == day)
    assert f"{want['users_90d']} users in the 90 days, vendor rule {want['vendor_rule']}" in title
    _shot(page, "ud")


def test_data_page(page: Any, server: Server) -> None:
    page.goto(server.base + "/data")
    servers = page.locator("section:has-text('License servers') tbody tr")
    assert servers.count() == 2
    assert page.locator("text=Dead letters (0)").count() == 1
    _shot(page, "data")


def test_an_empty_data_dir_says_so(browser: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    c = connect(settings)
    migrate(c, settings)
    c.close()
    s = Server(data, None)
    try:
        pg = browser.new_page()
        for path, words in [("/", "No license use stored yet"), ("/data", "Nothing stored yet")]:
            pg.goto(s.base + path)
            assert words in pg.content()
        pg.close()
    finally:
        s.stop()


def test_vendor_view_page(page: Any, server: Server) -> None:
    page.goto(server.base + "/vendor")
    rows = page.locator("#vendor tbody tr")
    days = server.api("/api/v1/vendor-view?org=acme")["rows"]
    last = max(r["day"] for r in days)
    first = (dt.date.fromisoformat(last) - dt.timedelta(days=29)).isoformat()
    want: dict[tuple[str, str], int] = {}
    for r in days:
        if r["day"] >= first:
            key = (r["server"], r["feature"])
            want[key] = max(want.get(key, 0), r["count_used_max"])
    got = {(c[0], c[1]): int(c[3]) for c in (rows.nth(k).locator("td").all_inner_texts() for k in range(rows.count()))}
    assert got == want and len(got) == 2 * 3
    assert page.locator("text=No vendor figures imported").count() == 1
    _shot(page, "vendor")
