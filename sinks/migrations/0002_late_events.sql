-- Events that arrived after their minute was final (older than the server's watermark). They are
-- in raw_events too; this table lists them so they can be seen and reconciled.
CREATE TABLE IF NOT EXISTS {db}.late_events {on_cluster}
(
    event_id String,
    ts DateTime64(6, 'UTC'),
    org LowCardinality(String),
    server LowCardinality(String),
    feature LowCardinality(String),
    action LowCardinality(String),
    source LowCardinality(String),
    seq UInt64,
    detected_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine_replacing}()
PARTITION BY toYYYYMM(ts)
ORDER BY (org, server, feature, ts, event_id)
SETTINGS {dedup_setting};
