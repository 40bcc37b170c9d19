-- Views for SQL users (docs/reports.md). Each reads the newest version of every minute (FINAL).
-- Hour and day rollups of both series, pool and estate: peak = max of the minute peaks, low = 0
-- when some minute of the period has no row, avg = time-weighted over the whole period.
CREATE VIEW IF NOT EXISTS {db}.usage_hour {on_cluster} AS
SELECT source, level, org, server, feature, toStartOfHour(minute) AS hour, max(peak) AS peak,
       if(count() < 60, 0, min(low)) AS low, sum(license_us) / 3600e6 AS avg,
       sum(license_us) / 3600e6 AS license_hours, sum(checkouts) AS checkouts, sum(denials) AS denials
FROM {db}.usage_minute FINAL
GROUP BY source, level, org, server, feature, hour;

CREATE VIEW IF NOT EXISTS {db}.usage_day {on_cluster} AS
SELECT source, level, org, server, feature, toDate(minute) AS day, max(peak) AS peak,
       if(count() < 1440, 0, min(low)) AS low, sum(license_us) / 86400e6 AS avg,
       sum(license_us) / 3600e6 AS license_hours, sum(checkouts) AS checkouts, sum(denials) AS denials
FROM {db}.usage_minute FINAL
GROUP BY source, level, org, server, feature, day;

-- Denials per hour, feature and user (user names compared as the vendor does).
CREATE VIEW IF NOT EXISTS {db}.denials_hour {on_cluster} AS
SELECT org, feature, toStartOfHour(ts) AS hour,
       {norm_user} AS user,
       count() AS denials, groupUniqArray(ifNull(reason, '')) AS reasons
FROM {db}.raw_events FINAL WHERE action = 'DENIED'
GROUP BY org, feature, hour, user;

-- What the organisation is entitled to on a day:  SELECT * FROM lictel.entitled(day = '2026-06-30')
CREATE VIEW IF NOT EXISTS {db}.entitled {on_cluster} AS
SELECT org, feature, sum(count) AS licenses
FROM {db}.entitlements FINAL
WHERE uncounted = 0 AND (start IS NULL OR start <= {{day:Date}}) AND expiry >= {{day:Date}}
GROUP BY org, feature;
