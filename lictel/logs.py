"""One logging setup for every long-running component: ``LICTEL_LOG_LEVEL`` and
``LICTEL_LOG_FORMAT`` (``text``, or ``json``: one object per line for a log shipper).

A JSON line has ``ts`` (UTC, ISO 8601), ``level``, ``component``, ``logger``, ``message`` and, with
an exception, ``exc``; fields a call passes in ``extra=`` are kept. The same configuration is given
to Faust's worker (``logging_config``), so the stream worker's own lines and Faust's and aiokafka's
come out alike.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.config
from typing import Any

from lictel.config import Settings

TEXT = "%(asctime)s %(component)s %(name)s %(levelname)s %(message)s"
# The attributes every LogRecord has: what is not among them came from extra=.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "component"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def __init__(self, component: str = "") -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        return json.dumps(out, ensure_ascii=False)


class _Component(logging.Filter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = self.component
        return True


def level(settings: Settings, default: str = "INFO") -> str:
    """The level a component logs at: ``LICTEL_LOG_LEVEL``, else the component's default."""
    return (settings.log_level or default).upper()


def config(component: str, settings: Settings, default_level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``component``: to stderr (stdout for Faust, which the
    embedded stack sends to the same log file), at the configured level and format."""
    formatter: dict[str, Any] = ({"()": JsonFormatter, "component": component} if settings.log_format == "json"
                                 else {"format": TEXT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"component": {"()": _Component, "component": component}},
        "formatters": {"lictel": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "lictel",
                                 "filters": ["component"], "stream": "ext://sys.stderr"}},
        "root": {"level": level(settings, default_level), "handlers": ["default"]},
    }


def setup(component: str, settings: Settings, default_level: str = "INFO") -> None:
    """Configure this process's logging for ``component``."""
    logging.config.dictConfig(config(component, settings, default_level))
