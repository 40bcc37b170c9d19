-- Licenses charged (FlexNet DUP_GROUP, DESIGN.md): every minute row carries peak, low and the
-- integral in a second measure, and the rule it was computed under. Rows written before this
-- migration were computed under no rule, so their charged figures read as the checkout figures.
ALTER TABLE {db}.usage_minute {on_cluster}
    ADD COLUMN IF NOT EXISTS charged_peak UInt32 DEFAULT peak AFTER orphans,
    ADD COLUMN IF NOT EXISTS charged_low UInt32 DEFAULT low AFTER charged_peak,
    ADD COLUMN IF NOT EXISTS charged_license_us Int64 DEFAULT license_us AFTER charged_low,
    ADD COLUMN IF NOT EXISTS dup_group LowCardinality(String) DEFAULT 'NONE' AFTER charged_license_us;

-- The hour and day views gain the charged measure (same rollup rules as the checkouts columns).
CREATE OR REPLACE VIEW {db}.usage_hour {on_cluster} AS
SELECT source, level, org, server, feature, toStartOfHour(minute) AS hour, max(peak) AS peak,
       if(count() < 60, 0, min(low)) AS low, sum(license_us) / 3600e6 AS avg,
       sum(license_us) / 3600e6 AS license_hours, sum(checkouts) AS checkouts, sum(denials) AS denials,
       max(charged_peak) AS charged_peak, if(count() < 60, 0, min(charged_low)) AS charged_low,
       sum(charged_license_us) / 3600e6 AS charged_avg, sum(charged_license_us) / 3600e6 AS charged_license_hours,
       arrayStringConcat(arraySort(groupUniqArray(dup_group)), ',') AS dup_group
FROM {db}.usage_minute FINAL
GROUP BY source, level, org, server, feature, hour;

CREATE OR REPLACE VIEW {db}.usage_day {on_cluster} AS
SELECT source, level, org, server, feature, toDate(minute) AS day, max(peak) AS peak,
       if(count() < 1440, 0, min(low)) AS low, sum(license_us) / 86400e6 AS avg,
       sum(license_us) / 3600e6 AS license_hours, sum(checkouts) AS checkouts, sum(denials) AS denials,
       max(charged_peak) AS charged_peak, if(count() < 1440, 0, min(charged_low)) AS charged_low,
       sum(charged_license_us) / 86400e6 AS charged_avg, sum(charged_license_us) / 3600e6 AS charged_license_hours,
       arrayStringConcat(arraySort(groupUniqArray(dup_group)), ',') AS dup_group
FROM {db}.usage_minute FINAL
GROUP BY source, level, org, server, feature, day;
