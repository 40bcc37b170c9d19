// lictel's pages: sortable tables and the charts of the feature and user/device pages.
// The first view's data comes with the page (#page-data); zooming and clicking ask /api/v1.
"use strict";

const lictelCharts = {};
window.lictelCharts = lictelCharts;

function sortableTables() {
  for (const table of document.querySelectorAll("table.sortable")) {
    table.querySelectorAll("th[data-type]").forEach((th, col) => {
      th.tabIndex = 0;
      th.title = "sort";
      const sort = () => {
        const asc = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        const num = th.dataset.type === "num";
        const body = table.tBodies[0];
        const key = (tr) => {
          const text = tr.cells[col].textContent.trim();
          if (!num) return text.toLowerCase();
          return text === "" ? -Infinity : Number(text);
        };
        const rows = Array.from(body.rows).sort((a, b) => {
          const x = key(a), y = key(b);
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach((r) => body.appendChild(r));
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
    });
  }
}

async function api(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) url.searchParams.set(k, v);
  const resp = await fetch(url, { credentials: "same-origin" });
  if (resp.status === 401) {
    window.location = "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
    throw new Error("signed out");
  }
  if (!resp.ok) throw new Error((await resp.json()).detail || resp.statusText);
  return resp.json();
}

function el(tag, text) {
  const e = document.createElement(tag);
  e.textContent = text;
  return e;
}

function chart(id) {
  const node = document.getElementById(id);
  const c = echarts.init(node, null, { renderer: "canvas" });
  window.addEventListener("resize", () => c.resize());
  lictelCharts[id] = c;
  return c;
}

const DAY_MS = 86400000;

function featurePage(data) {
  const usage = chart("usage");
  let level = "day";
  const series = (rows) => rows.map(([t, v]) => [Date.parse(t), v]);
  const daily = series(data.daily);
  usage.setOption({
    animation: false,
    grid: { left: 50, right: 80, top: 30, bottom: 70 },
    tooltip: { trigger: "axis" },
    legend: { top: 0, data: ["peak (charged)", "peak minutes"] },
    xAxis: { type: "time" },
    yAxis: { type: "value", name: "licenses", minInterval: 1 },
    dataZoom: [{ type: "inside" }, { type: "slider" }],
    series: [
      {
        name: "peak (charged)", type: "line", step: "end", showSymbol: false, data: daily,
        markLine: data.entitled ? { symbol: "none", label: { formatter: "entitled {c}" },
          lineStyle: { color: "#c0392b", type: "dashed" }, data: [{ yAxis: data.entitled }] } : undefined,
      },
      { name: "peak minutes", type: "scatter", symbolSize: 11, z: 5, itemStyle: { color: "#e67e22" },
        data: series(data.peaks), tooltip: { trigger: "item", formatter: (p) =>
          `${new Date(p.value[0]).toISOString().slice(0, 16)}Z: ${p.value[1]} licenses — click for the holders` } },
    ],
  });
  usage.on("click", (p) => {
    if (p.seriesName === "peak minutes" || level === "minute") showHolders(data, new Date(p.value[0]).toISOString());
  });
  let pending = 0;
  usage.on("datazoom", () => {
    const opt = usage.getOption();
    const z = opt.dataZoom[0];
    const [lo, hi] = [z.startValue, z.endValue];
    if (lo === undefined || hi === undefined) return;
    const span = hi - lo;
    const want = span <= 0.5 * DAY_MS ? "minute" : span <= 10 * DAY_MS ? "hour" : "day";
    const ticket = ++pending;
    if (want === "day") {
      if (level !== "day") { level = "day"; usage.setOption({ series: [{ data: daily }] }); }
      return;
    }
    api("/api/v1/usage", { level: "estate", granularity: want, org: data.org, feature: data.feature,
      measure: "charged", from: new Date(lo - DAY_MS).toISOString().slice(0, 19) + "Z",
      to: new Date(hi + DAY_MS).toISOString().slice(0, 19) + "Z" }).then((got) => {
      if (ticket !== pending) return;
      level = want;
      usage.setOption({ series: [{ data: got.rows.map((r) => [Date.parse(r.minute), r.peak]) }] });
    });
  });

  const heat = chart("heatmap");
  const days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
  const top = Math.max(1, ...data.heatmap.map((c) => c[2]));
  heat.setOption({
    animation: false, tooltip: { formatter: (p) => `${days[p.value[1]]} ${String(p.value[0]).padStart(2, "0")}:00 — ${p.value[2]} on average` },
    grid: { left: 45, right: 10, top: 10, bottom: 75 },
    xAxis: { type: "category", data: [...Array(24).keys()].map((h) => String(h).padStart(2, "0")) },
    yAxis: { type: "category", data: days, inverse: true },
    visualMap: { min: 0, max: top, calculable: true, orient: "horizontal", left: "center", bottom: 0,
      inRange: { color: ["#f7fbff", "#6baed6", "#08306b"] } },
    series: [{ type: "heatmap", data: data.heatmap }],
  });

  const fc = chart("forecast");
  const pts = data.forecast.points;
  fc.setOption({
    animation: false, tooltip: { trigger: "axis" }, grid: { left: 50, right: 80, top: 30, bottom: 30 },
    legend: { top: 0, data: ["daily peak", "forecast"] },
    xAxis: { type: "time" }, yAxis: { type: "value", minInterval: 1 },
    series: [
      { name: "daily peak", type: "line", showSymbol: false, data: daily },
      { name: "forecast", type: "line", showSymbol: false, lineStyle: { type: "dashed" },
        data: pts.map((p) => [Date.parse(p[0]), p[1]]),
        markLine: data.entitled ? { symbol: "none", label: { formatter: "entitled {c}" },
          lineStyle: { color: "#c0392b", type: "dashed" }, data: [{ yAxis: data.entitled }] } : undefined },
      { name: "band low", type: "line", stack: "band", showSymbol: false, lineStyle: { opacity: 0 },
        data: pts.map((p) => [Date.parse(p[0]), p[2]]), tooltip: { show: false } },
      { name: "band", type: "line", stack: "band", showSymbol: false, lineStyle: { opacity: 0 },
        areaStyle: { color: "rgba(52, 152, 219, 0.2)" }, data: pts.map((p) => [Date.parse(p[0]), p[3] - p[2]]),
        tooltip: { show: false } },
    ],
  });
}

async function showHolders(data, minute) {
  const got = await api("/api/v1/holders", { org: data.org, feature: data.feature, minute });
  const panel = document.getElementById("holders");
  document.getElementById("holders-title").textContent =
    `Who held ${data.feature} at ${minute.slice(0, 16)}Z (each server at its busiest instant of the minute)`;
  const body = document.getElementById("holders-rows");
  body.replaceChildren(...got.rows.map((r) => {
    const tr = document.createElement("tr");
    for (const k of ["server", "instant", "user", "host", "count", "since"]) tr.appendChild(el("td", r[k]));
    return tr;
  }));
  panel.hidden = false;
  panel.dataset.minute = minute;
}

function udPage(data) {
  const c = chart("udchart");
  const s = (k) => data.series.map((r) => [r[0], r[k]]);
  c.setOption({
    animation: false, tooltip: { trigger: "axis" }, legend: { top: 0, data: ["users (90 days)", "vendor rule", "optimum"] },
    grid: { left: 50, right: 20, top: 40, bottom: 70 }, dataZoom: [{ type: "inside" }, { type: "slider" }],
    xAxis: { type: "time" }, yAxis: { type: "value", minInterval: 1, name: "licenses" },
    series: [
      { name: "users (90 days)", type: "line", showSymbol: false, data: s(1) },
      { name: "vendor rule", type: "line", showSymbol: false, data: s(2) },
      { name: "optimum", type: "line", showSymbol: false, data: s(3) },
    ],
  });
  c.getZr().on("click", async (e) => {
    const at = c.convertFromPixel({ seriesIndex: 0 }, [e.offsetX, e.offsetY]);
    if (!at) return;
    const day = new Date(at[0]).toISOString().slice(0, 10);
    const got = await api("/api/v1/ud", { org: data.org, feature: data.feature, day, explain: true });
    const r = got.rows[0];
    if (!r) return;
    document.getElementById("explain-title").textContent =
      `${day}: ${r.users_90d} users in the 90 days, vendor rule ${r.vendor_rule}, optimum ${r.optimal}`;
    document.getElementById("explain-vendor").textContent =
      `devices: ${r.vendor_devices || "none"}; users: ${r.vendor_users || "none"}`;
    document.getElementById("explain-optimal").textContent =
      `devices: ${r.optimal_devices || "none"}; users: ${r.optimal_users || "none"}`;
    document.getElementById("explain").hidden = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  sortableTables();
  const node = document.getElementById("page-data");
  if (!node) return;
  const data = JSON.parse(node.textContent);
  if (document.getElementById("usage")) featurePage(data);
  if (document.getElementById("udchart")) {
    const params = new URLSearchParams(window.location.search);
    udPage({ ...data, org: params.get("org"), feature: params.get("feature") });
  }
});
