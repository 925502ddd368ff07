-- name: unmapped_all
SELECT key, scope_name, sum(count) AS count, toUnixTimestamp64Nano(max(last_seen)) AS last_seen_ns,
       argMax(example, last_seen) AS example
FROM unmapped_attributes
GROUP BY key, scope_name
ORDER BY count DESC, key
LIMIT {limit:UInt32};

-- name: unmapped_by_project
SELECT key, scope_name, sum(count) AS count, toUnixTimestamp64Nano(max(last_seen)) AS last_seen_ns,
       argMax(example, last_seen) AS example
FROM unmapped_attributes
WHERE project_id = {project:String}
GROUP BY key, scope_name
ORDER BY count DESC, key
LIMIT {limit:UInt32};

-- name: unmapped_by_projects
SELECT key, scope_name, sum(count) AS count, toUnixTimestamp64Nano(max(last_seen)) AS last_seen_ns,
       argMax(example, last_seen) AS example
FROM unmapped_attributes
WHERE project_id IN {projects:Array(String)}
GROUP BY key, scope_name
ORDER BY count DESC, key
LIMIT {limit:UInt32};
