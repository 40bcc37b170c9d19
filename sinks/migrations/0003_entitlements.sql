-- Entitlements imported from FlexNet license files and contract CSVs (lictel entitlements import).
-- One row per INCREMENT/FEATURE line or CSV row; a re-import of a source replaces its rows.
CREATE TABLE IF NOT EXISTS {db}.entitlements {on_cluster}
(
    org LowCardinality(String),
    source String,
    line UInt32,
    feature LowCardinality(String),
    vendor LowCardinality(String),
    version String,
    count UInt32,
    uncounted UInt8,
    start Nullable(Date32),
    expiry Date32,
    issued Nullable(Date32),
    dup_group String,
    supersede String,
    overdraft UInt32,
    vendor_string String,
    kind LowCardinality(String),
    note String,
    imported_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine_replacing}(imported_at)
ORDER BY (org, source, line)
SETTINGS {dedup_setting};
