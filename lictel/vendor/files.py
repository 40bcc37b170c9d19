"""The vendor side's files: read them, store them with their origin, and write ours in their form.

Two kinds of file come from the vendor's side:

- the license server's **compliance upload** (the manual-reporting bundle), XML or JSON with the
  documented element names: a license server (``FQDN``, ``GUID``, ...) with an ``Inventory`` of
  ``Feature`` elements (``ID``, ``UDAdminUsersReleased``, ``UDAdminDevicesReleased``), each with one
  ``SADate`` per Customer Success Services date (attribute ``id``, e.g. ``2026.0301``) holding a sample
  window ``DateSampleStartUTC``–``DateSampleStopUTC``, ``CountUsedMax``, ``CCUDevices`` (``DevId``
  elements), ``Licensees`` (``CountTotal``, ``Users``, ``Devices``) and ``CountInstalled``. Element
  names are matched exactly; the root element, namespaces and any other element are ignored, and
  ``Users``/``Devices`` may be counts or lists of IDs.
- a **vendor usage report**, CSV with the header ``date,feature,count`` and optionally ``server``,
  ``installed``, ``licensees`` and ``devices`` (scrambled IDs separated by spaces or ``;``). Without a
  ``server`` column a row speaks of the whole organisation (the estate).

:func:`to_xml` writes our vendor view with the same element names, so the two files can be put
side by side, and our own file reads back as a vendor file (a test holds the round trip).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from lictel.errors import InputError
from lictel.timeutil import iso_s, parse_ts, us_date

BUNDLE, CSV = "bundle", "csv"
COLUMNS = ["org", "origin", "line", "kind", "server", "feature", "sa_date", "day", "window_start", "window_stop",
           "count_used_max", "installed", "ud_total", "ud_users", "ud_devices", "users_released",
           "devices_released", "devices"]


@dataclass
class Sample:
    """One figure set of the vendor's side: a feature of a server (``""``: the estate) on a day."""

    org: str
    origin: str
    line: int
    kind: str
    server: str
    feature: str
    sa_date: str
    day: dt.date
    window_start: int | None = None  # µs, from the upload's DateSampleStartUTC
    window_stop: int | None = None
    count_used_max: int | None = None
    installed: int | None = None
    ud_total: int | None = None
    ud_users: int | None = None
    ud_devices: int | None = None
    users_released: int | None = None
    devices_released: int | None = None
    devices: list[str] = field(default_factory=list)

    def row(self) -> list[Any]:
        def t(us: int | None) -> dt.datetime | None:
            return None if us is None else dt.datetime.fromtimestamp(us / 1e6, dt.UTC).replace(tzinfo=None)

        return [self.org, self.origin, self.line, self.kind, self.server, self.feature, self.sa_date, self.day,
                t(self.window_start), t(self.window_stop), self.count_used_max, self.installed, self.ud_total,
                self.ud_users, self.ud_devices, self.users_released, self.devices_released, self.devices]


# --------------------------------------------------------------------------- reading


def read(path: Path, org: str, server: str | None = None) -> list[Sample]:
    """The samples of a vendor file: an upload bundle (``.xml``, ``.json``) or a usage CSV (any other
    name). ``server`` overrides the server the file names (or, for a CSV, gives it one)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror or exc}", source=str(path)) from None
    text = raw.decode("utf-8-sig", errors="replace")
    suffix = path.suffix.lower()
    if suffix == ".xml" or (suffix != ".json" and text.lstrip().startswith("<")):
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as exc:
            raise InputError(f"not well-formed XML ({exc})", source=str(path), line=exc.position[0]) from None
        samples = list(_bundle(root, org, str(path)))
    elif suffix == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", source=str(path), line=exc.lineno) from None
        samples = list(_bundle(_json_element("root", doc), org, str(path)))
    else:
        samples = _csv(text, org, str(path))
    if not samples:
        raise InputError("no figures found: an upload bundle needs Feature elements with SADate samples, a usage "
                         "CSV the header date,feature,count and at least one row", source=str(path))
    if server is not None:
        for s in samples:
            s.server = server
    return samples


def _json_element(tag: str, value: Any) -> ET.Element:
    """JSON as the element tree the XML reader walks: keys are elements, lists repeat them."""
    el = ET.Element(tag)
    if isinstance(value, dict):
        for k, v in value.items():
            for item in v if isinstance(v, list) else [v]:
                if k == "id" and not isinstance(item, dict | list):
                    el.set("id", str(item))
                el.append(_json_element(str(k), item))
    elif value is not None:
        el.text = str(value)
    return el


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _text(el: ET.Element, name: str) -> str:
    c = _child(el, name)
    return (c.text or "").strip() if c is not None else ""


def _bundle(root: ET.Element, org: str, origin: str) -> Iterator[Sample]:
    line = 0

    def walk(el: ET.Element, server: str) -> Iterator[Sample]:
        nonlocal line
        server = _text(el, "FQDN") or server
        for c in el:
            if _local(c.tag) != "Feature":
                yield from walk(c, server)
                continue
            feature = _text(c, "ID")
            if not feature:
                raise InputError("a Feature element has no ID", source=origin)
            released = (_count(c, "UDAdminUsersReleased", origin), _count(c, "UDAdminDevicesReleased", origin))
            for sa in c:
                if _local(sa.tag) != "SADate":
                    continue
                line += 1
                yield _sa_sample(sa, org, origin, line, server, feature, released)

    yield from walk(root, "")


def _count(el: ET.Element, name: str, origin: str) -> int | None:
    """A count element: its number, or the number of its children when it lists IDs."""
    c = _child(el, name)
    if c is None:
        return None
    if len(c):
        return len(c)
    text = (c.text or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise InputError(f"{name} {text!r} is not a whole number", source=origin, field=name)
    return int(text)


def _time(el: ET.Element, name: str, origin: str) -> int | None:
    text = _text(el, name)
    if not text:
        return None
    try:
        return parse_ts(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise InputError(f"{name} {text!r} is not a UTC time like 2026-03-02T00:00:00Z", source=origin,
                         field=name) from None


def _sa_sample(sa: ET.Element, org: str, origin: str, line: int, server: str, feature: str,
               released: tuple[int | None, int | None]) -> Sample:
    start, stop = _time(sa, "DateSampleStartUTC", origin), _time(sa, "DateSampleStopUTC", origin)
    if start is None or stop is None or stop <= start:
        raise InputError(f"the SADate sample of {feature} needs DateSampleStartUTC before DateSampleStopUTC",
                         source=origin, line=line, field="DateSampleStartUTC")
    lic = _child(sa, "Licensees")
    dev = _child(sa, "CCUDevices")
    devices = [(d.text or "").strip() for d in dev if _local(d.tag) == "DevId"] if dev is not None else []
    total, users, devs = ((_count(lic, n, origin) for n in ("CountTotal", "Users", "Devices")) if lic is not None
                          else (None, None, None))
    return Sample(org, origin, line, BUNDLE, server, feature, sa.get("id") or _text(sa, "id"),
                  us_date(start + (stop - start) // 2), start, stop, _count(sa, "CountUsedMax", origin),
                  _count(sa, "CountInstalled", origin), total, users, devs, released[0], released[1],
                  [d for d in devices if d])


_SPLIT = re.compile(r"[\s;,]+")


def _csv(text: str, org: str, origin: str) -> list[Sample]:
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower(): c for c in reader.fieldnames or []}
    if not {"date", "feature", "count"} <= cols.keys():
        raise InputError("a vendor usage file needs the header date,feature,count (optional: server, installed, "
                         "licensees, devices)", source=origin, line=1)
    out = []
    for row in reader:
        n = reader.line_num

        def get(name: str, row: dict[str, str | None] = row) -> str:
            return (row.get(cols[name]) or "").strip() if name in cols else ""

        try:
            day = dt.date.fromisoformat(get("date"))
        except ValueError:
            raise InputError(f"date {get('date')!r} is not YYYY-MM-DD", source=origin, line=n, field="date") from None
        if not get("feature"):
            raise InputError("feature is empty", source=origin, line=n, field="feature")
        nums: dict[str, int | None] = {}
        for name in ("count", "installed", "licensees"):
            value = get(name)
            if name != "count" and not value:
                nums[name] = None
                continue
            if not value.isdigit():
                raise InputError(f"{name} {value!r} is not a whole number", source=origin, line=n, field=name)
            nums[name] = int(value)
        out.append(Sample(org, origin, n, CSV, get("server"), get("feature"), "", day, None, None, nums["count"],
                          nums["installed"], nums["licensees"], devices=[d for d in _SPLIT.split(get("devices")) if d]))
    return out


# --------------------------------------------------------------------------- storing


def store(client: Client, db: str, samples: list[Sample]) -> None:
    """Replace what was imported from the same files: the new rows go in first, then the older rows
    of those files are deleted, so a failed import leaves the previous one whole."""
    if not samples:
        return
    origins = sorted({(s.org, s.origin) for s in samples})
    stamp = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    client.insert(f"{db}.vendor_samples", [[*s.row(), stamp] for s in samples],
                  column_names=[*COLUMNS, "imported_at"])
    client.command(f"DELETE FROM {db}.vendor_samples WHERE (org, origin) IN {{o:Array(Tuple(String, String))}} "
                   f"AND imported_at < {{stamp:DateTime64(3)}}", parameters={"o": origins, "stamp": stamp})


def stored(client: Client, db: str, org: str | None = None) -> list[Sample]:
    where, params = ("WHERE org = {org:String}", {"org": org}) if org else ("", {})
    result = client.query(
        f"SELECT org, origin, line, kind, server, feature, sa_date, day, "
        f"toUnixTimestamp64Milli(window_start), toUnixTimestamp64Milli(window_stop), count_used_max, installed, "
        f"ud_total, ud_users, ud_devices, users_released, devices_released, devices "
        f"FROM {db}.vendor_samples FINAL {where} ORDER BY org, server, feature, day, origin, line", parameters=params)
    out = []
    for r in result.result_rows:
        start, stop = (None if x is None else int(x) * 1000 for x in (r[8], r[9]))
        out.append(Sample(r[0], r[1], int(r[2]), r[3], r[4], r[5], r[6], r[7], start, stop, r[10], r[11], r[12],
                          r[13], r[14], r[15], r[16], list(r[17])))
    return out


# --------------------------------------------------------------------------- writing


def to_xml(rows: Iterable[Any], boundary: str, note: str) -> str:
    """Our vendor view in the upload's element names: one ``LicenseServer`` per server, one
    ``Feature`` per feature, one ``SADate`` per sample window. ``rows`` are :class:`lictel.vendor.view.
    VendorRow`; devices are written scrambled, as the server uploads them."""
    from lictel.vendor.ids import scramble

    root = ET.Element("LicenseServers", {"generator": "lictel", "windowStart": boundary})
    root.append(ET.Comment(" " + re.sub(r"-(?=-)", "- ", note).rstrip("-") + " "))  # "--" ends a comment
    servers: dict[str, ET.Element] = {}
    features: dict[tuple[str, str], ET.Element] = {}
    for r in rows:
        inv = servers.get(r.server)
        if inv is None:
            srv = ET.SubElement(root, "LicenseServer")
            ET.SubElement(srv, "FQDN").text = r.server
            inv = servers[r.server] = ET.SubElement(srv, "Inventory")
        feat = features.get((r.server, r.feature))
        if feat is None:
            feat = features[(r.server, r.feature)] = ET.SubElement(inv, "Feature")
            ET.SubElement(feat, "ID").text = r.feature
        sa = ET.SubElement(feat, "SADate", {"id": r.sa_date})
        ET.SubElement(sa, "DateSampleStartUTC").text = iso_s(r.window_start)
        ET.SubElement(sa, "DateSampleStopUTC").text = iso_s(r.window_stop)
        ET.SubElement(sa, "CountUsedMax").text = str(r.count_used_max)
        ccu = ET.SubElement(sa, "CCUDevices")
        for d in r.devices:
            ET.SubElement(ccu, "DevId").text = scramble(d)
        ET.SubElement(sa, "Active").text = "1"
        lic = ET.SubElement(sa, "Licensees")
        for name, value in (("CountTotal", r.ud_licensees), ("Users", r.ud_users), ("Devices", r.ud_devices)):
            ET.SubElement(lic, name).text = str(value)
        if r.installed_from:  # only what imported entitlements say
            ET.SubElement(sa, "CountInstalled").text = str(r.installed)
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
