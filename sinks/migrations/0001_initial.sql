-- Raw events: every event as received, deduplicated by event_id (the same id always has the same
-- org, server, feature and ts, so the sorting key ends with it). HEARTBEATs are not stored.
CREATE TABLE IF NOT EXISTS {db}.raw_events {on_cluster}
(
    event_id String,
    ts DateTime64(6, 'UTC'),
    org LowCardinality(String),
    server LowCardinality(String),
    vendor LowCardinality(String),
    feature LowCardinality(String),
    action LowCardinality(String),
    user String,
    host String,
    handle Nullable(String),
    count UInt32,
    reason Nullable(String),
    source LowCardinality(String),
    seq UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine_replacing}()
PARTITION BY toYYYYMM(ts)
ORDER BY (org, server, feature, ts, event_id)
{ttl}
SETTINGS {dedup_setting};

-- Minute usage of pool keys (org, server, feature) and estate keys (org, feature; server = '').
-- A later version of the same key and minute (a recompute) replaces the earlier one.
CREATE TABLE IF NOT EXISTS {db}.usage_minute {on_cluster}
(
    level LowCardinality(String),
    org LowCardinality(String),
    server LowCardinality(String),
    feature LowCardinality(String),
    minute DateTime('UTC'),
    peak UInt32,
    low UInt32,
    license_us Int64,
    checkouts UInt64,
    checkins UInt64,
    forced_releases UInt64,
    denials UInt64,
    queued UInt64,
    orphans UInt64,
    version UInt64
)
ENGINE = {engine_replacing}(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (level, org, feature, server, minute)
SETTINGS {dedup_setting};

-- Input that could not be used, with the reason; keyed by its place in the dead-letter topic.
CREATE TABLE IF NOT EXISTS {db}.dead_letters {on_cluster}
(
    ts DateTime64(6, 'UTC'),
    stage LowCardinality(String),
    source String,
    line Nullable(UInt64),
    field Nullable(String),
    reason String,
    raw String,
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = {engine_replacing}()
ORDER BY (kafka_topic, kafka_partition, kafka_offset)
SETTINGS {dedup_setting};

-- How far each stream partition is final and stored.
CREATE TABLE IF NOT EXISTS {db}.pipeline_progress {on_cluster}
(
    partition UInt32,
    final_upto DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC')
)
ENGINE = {engine_replacing}(updated_at)
ORDER BY partition;
