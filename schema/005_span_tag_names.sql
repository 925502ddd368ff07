-- Tag names for the Tempo tag routes without scanning spans: the attribute keys seen per
-- project, scope and hour, folded per insert block by a materialized view.
CREATE TABLE IF NOT EXISTS span_tag_names
(
    project_id LowCardinality(String),
    scope      LowCardinality(String),
    hour       DateTime('UTC'),
    key        String
)
ENGINE = ReplacingMergeTree
ORDER BY (project_id, scope, hour, key);

CREATE MATERIALIZED VIEW IF NOT EXISTS span_tag_names_mv TO span_tag_names AS
SELECT project_id, tag.1 AS scope, toStartOfHour(start_time) AS hour, tag.2 AS key
FROM spans
ARRAY JOIN arrayConcat(arrayMap(k -> ('span', k), mapKeys(attributes)),
                       arrayMap(k -> ('resource', k), mapKeys(resource_attributes))) AS tag
GROUP BY project_id, scope, hour, key;

INSERT INTO span_tag_names
SELECT project_id, tag.1 AS scope, toStartOfHour(start_time) AS hour, tag.2 AS key
FROM spans
ARRAY JOIN arrayConcat(arrayMap(k -> ('span', k), mapKeys(attributes)),
                       arrayMap(k -> ('resource', k), mapKeys(resource_attributes))) AS tag
GROUP BY project_id, scope, hour, key;
