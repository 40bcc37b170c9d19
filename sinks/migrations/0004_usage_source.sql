-- Two usage series side by side: what license servers logged (source = 'license') and the
-- concurrent licenses that broker session exports imply (source = 'sessions'). The column joins
-- the end of the sorting key, so the same key and minute of the two series are two rows. It is
-- added without a default first (the only way a new column may enter a sorting key), then given
-- the default, which is also what rows written before this migration read as.
ALTER TABLE {db}.usage_minute {on_cluster}
    ADD COLUMN IF NOT EXISTS source LowCardinality(String) AFTER level,
    MODIFY ORDER BY (level, org, feature, server, minute, source);
ALTER TABLE {db}.usage_minute {on_cluster} MODIFY COLUMN source LowCardinality(String) DEFAULT 'license';

-- Progress per input stream (events, sessions) and partition.
ALTER TABLE {db}.pipeline_progress {on_cluster}
    ADD COLUMN IF NOT EXISTS stream LowCardinality(String) AFTER partition,
    MODIFY ORDER BY (partition, stream);
ALTER TABLE {db}.pipeline_progress {on_cluster} MODIFY COLUMN stream LowCardinality(String) DEFAULT 'events';
