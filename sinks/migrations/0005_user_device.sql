-- User/device licensing: per org, feature and UTC day, the exact set of (user, device) pairs that
-- checked out (OUT), as aggregate states; a 90-day answer merges 90 daily states. User names are
-- compared as the vendor does by default: lower-cased, domain removed (DOMAIN\user, user@domain);
-- devices lower-cased ({norm_user} and {norm_device}: lictel.identity, the same rule as in Python).
CREATE TABLE IF NOT EXISTS {db}.ud_daily {on_cluster}
(
    org LowCardinality(String),
    feature LowCardinality(String),
    day Date,
    pairs AggregateFunction(groupUniqArray, Tuple(String, String)),
    users AggregateFunction(uniqExact, String),
    devices AggregateFunction(uniqExact, String)
)
ENGINE = {engine_aggregating}()
PARTITION BY toYYYYMM(day)
ORDER BY (org, feature, day);

-- Filled from every raw event as it is stored (a replayed event adds nothing: the states are sets).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ud_daily_mv {on_cluster} TO {db}.ud_daily AS
SELECT org, feature, toDate(ts) AS day,
       groupUniqArrayState((u, d)) AS pairs, uniqExactState(u) AS users, uniqExactState(d) AS devices
FROM (SELECT org, feature, ts,
             {norm_user} AS u,
             {norm_device} AS d
      FROM {db}.raw_events WHERE action = 'OUT' AND vendor != 'SESSIONS')
GROUP BY org, feature, day;

-- Raw events stored before this migration.
INSERT INTO {db}.ud_daily
SELECT org, feature, toDate(ts) AS day,
       groupUniqArrayState((u, d)), uniqExactState(u), uniqExactState(d)
FROM (SELECT org, feature, ts,
             {norm_user} AS u,
             {norm_device} AS d
      FROM {db}.raw_events FINAL WHERE action = 'OUT' AND vendor != 'SESSIONS')
GROUP BY org, feature, day;

-- For SQL users: distinct users and devices over the 90 days ending {day} (that day and the 89
-- before it), per org and feature:  SELECT * FROM lictel.ud_window(day = '2026-06-30')
CREATE VIEW IF NOT EXISTS {db}.ud_window {on_cluster} AS
SELECT org, feature, {{day:Date}} AS day, users_90d, devices_90d
FROM (SELECT org, feature, uniqExactMerge(users) AS users_90d, uniqExactMerge(devices) AS devices_90d
      FROM {db}.ud_daily WHERE day > {{day:Date}} - 90 AND day <= {{day:Date}} GROUP BY org, feature);
