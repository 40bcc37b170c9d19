-- Day rollups of usage_minute (UTC days), kept by whoever writes minutes: the sink once a day is
-- final on every partition (and again for a final day that receives rows later), reconcile for the
-- days it rewrites. Long-range questions (peaks over the whole history, sizing, overuse) read whole
-- days below the watermark from here and the rest from usage_minute, so their answers are those of
-- the minute rows. docs/decisions.md, "Day rollups".
CREATE TABLE IF NOT EXISTS {db}.usage_daily {on_cluster}
(
    level LowCardinality(String),
    org LowCardinality(String),
    feature LowCardinality(String),
    server LowCardinality(String),
    source LowCardinality(String),
    day Date,
    minutes UInt32,                    -- stored minute rows of the day
    first_minute DateTime('UTC'),
    last_minute DateTime('UTC'),
    peak_first UInt64,                 -- peak << 32 | the first minute reaching it, counted down
    charged_peak_first UInt64,         -- the same over the licenses charged
    license_us Int64,
    charged_license_us Int64,
    denials UInt64,
    rules Array(LowCardinality(String)),  -- the DUP_GROUP rules the day's minutes were charged under
    levels Array(UInt32),              -- distinct charged peaks of the day's minutes ...
    level_minutes Array(UInt64),       -- ... and how many minutes had each
    version UInt64                     -- the newest minute row's version
)
ENGINE = {engine_replacing}(version)
PARTITION BY toYear(day)
ORDER BY (level, org, feature, server, source, day)
SETTINGS {dedup_setting};

-- Whole UTC days before `upto` have their rollups in usage_daily.
CREATE TABLE IF NOT EXISTS {db}.rollup_watermark {on_cluster}
(
    name LowCardinality(String),
    upto Date,
    updated_at DateTime64(6, 'UTC')
)
ENGINE = {engine_replacing}(updated_at)
ORDER BY name;

-- What was stored before this migration: every day before the last stored one.
INSERT INTO {db}.usage_daily
SELECT level, org, feature, server, source, toDate(minute) AS day, count(), min(minute), max(minute),
       max(bitShiftLeft(toUInt64(peak), 32) + (4294967295 - toUnixTimestamp(minute))),
       max(bitShiftLeft(toUInt64(charged_peak), 32) + (4294967295 - toUnixTimestamp(minute))),
       sum(license_us), sum(charged_license_us), sum(denials), arraySort(groupUniqArray(dup_group)),
       (sumMap([charged_peak], [toUInt64(1)]) AS lv).1, lv.2, max(version)
FROM {db}.usage_minute FINAL
WHERE minute < (SELECT toStartOfDay(max(minute)) FROM {db}.usage_minute)
GROUP BY level, org, feature, server, source, day;

INSERT INTO {db}.rollup_watermark
SELECT 'usage_daily', toDate(max(minute)), now64(6) FROM {db}.usage_minute HAVING count() > 0;
