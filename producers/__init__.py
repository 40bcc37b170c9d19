"""Producers: one module per source kind, all feeding the events topic through ``base``."""
