"""Sinks: Kafka topics into stores. One module per store (``clickhouse``)."""
