"""lictel: license telemetry measured by the customer.

Core package shared by ``producers/``, ``streams/`` and ``sinks/``: settings, the event model,
Avro serde, the pure concurrency engine, the embedded broker, the CLI.
"""

__version__ = "0.1.0"
