-- Alerts (docs/alerts.md): every time an alert fires or resolves, with its delivery. The last row of
-- a (rule, subject) says whether its episode is open, so a restarted sink neither fires it again nor
-- forgets to resolve it.
CREATE TABLE IF NOT EXISTS {db}.alerts {on_cluster}
(
    at DateTime64(6, 'UTC'),
    rule LowCardinality(String),
    kind LowCardinality(String),
    subject String,
    state LowCardinality(String),
    since DateTime64(6, 'UTC'),
    message String,
    delivered UInt8,
    attempts UInt8,
    error String
)
ENGINE = {engine_replacing}()
ORDER BY (rule, subject, at, state)
SETTINGS {dedup_setting};
