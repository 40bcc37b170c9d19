-- The vendor's view (docs/vendor-view.md). Entitlements can name the license server whose license
-- files they came from (lictel entitlements import --server), so what a server has installed is its
-- own; '' means the organisation's, not tied to a server.
ALTER TABLE {db}.entitlements {on_cluster}
    ADD COLUMN IF NOT EXISTS server LowCardinality(String) DEFAULT '' AFTER org;

-- What the vendor's side says: the license server's compliance upload (one row per feature, SA date
-- and sample window) or a vendor usage report (one row per CSV line), with the file it came from.
-- A re-import of the same file replaces its rows.
CREATE TABLE IF NOT EXISTS {db}.vendor_samples {on_cluster}
(
    org LowCardinality(String),
    origin String,
    line UInt32,
    kind LowCardinality(String),
    server String,
    feature LowCardinality(String),
    sa_date String,
    day Date32,
    window_start Nullable(DateTime64(3, 'UTC')),
    window_stop Nullable(DateTime64(3, 'UTC')),
    count_used_max Nullable(UInt32),
    installed Nullable(UInt32),
    ud_total Nullable(UInt32),
    ud_users Nullable(UInt32),
    ud_devices Nullable(UInt32),
    users_released Nullable(UInt32),
    devices_released Nullable(UInt32),
    devices Array(String),
    imported_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine_replacing}(imported_at)
ORDER BY (org, origin, line)
SETTINGS {dedup_setting};

-- Scrambled identities matched to our user and device names (lictel ids match), with the clear-text
-- form and encoding that matched.
CREATE TABLE IF NOT EXISTS {db}.vendor_ids {on_cluster}
(
    org LowCardinality(String),
    scrambled String,
    kind LowCardinality(String),
    name String,
    form LowCardinality(String),
    encoding LowCardinality(String),
    matched_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine_replacing}(matched_at)
ORDER BY (org, scrambled, kind, name)
SETTINGS {dedup_setting};
