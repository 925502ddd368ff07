-- name: trace_by_id
SELECT project_id, span_id, parent_span_id, name, kind, toUnixTimestamp64Nano(start_time) AS start_ns,
       toUnixTimestamp64Nano(end_time) AS end_ns, status_code, status_message, attributes, resource_attributes,
       scope_name, scope_version, events, links, inference_id
FROM spans FINAL
WHERE trace_id = {trace_id:String}
  AND start_time <= fromUnixTimestamp64Nano({end_ns:Int64}, 'UTC')
  AND end_time >= fromUnixTimestamp64Nano({start_ns:Int64}, 'UTC')
ORDER BY start_time, span_id
LIMIT {limit:UInt32};

-- name: inferences_of_trace
SELECT inference_id, project_id, span_id, parent_span_id, span_name, span_kind, scope_name, service_name,
       toUnixTimestamp64Nano(timestamp) AS timestamp_ns, toUnixTimestamp64Nano(end_timestamp) AS end_timestamp_ns,
       is_success, error_message, attributes
FROM inferences FINAL
WHERE trace_id = {trace_id:String}
  AND timestamp <= fromUnixTimestamp64Nano({end_ns:Int64}, 'UTC')
  AND end_timestamp >= fromUnixTimestamp64Nano({start_ns:Int64}, 'UTC')
ORDER BY timestamp
LIMIT 1000;

-- name: feedback_of_trace
-- Within the caller's projects before the limit: another project's rows must neither crowd out
-- the caller's nor show through the count.
SELECT feedback_id, inference_id, project_id, kind, name, value, label, comment, source, created_by, response_id, trace_id,
       span_id, toUnixTimestamp64Nano(timestamp) AS timestamp_ns
FROM feedback FINAL
WHERE trace_id = {trace_id:String} AND ({every_project:Bool} OR project_id IN {projects:Array(String)})
ORDER BY timestamp DESC, feedback_id
LIMIT {limit:UInt32};

-- name: inferences_by_id
SELECT inference_id, project_id
FROM inference_lookup
WHERE inference_id IN {ids:Array(UUID)} AND project_id IN {projects:Array(String)};

-- name: inferences_by_response_id
SELECT inference_id, project_id, response_id
FROM inferences FINAL
WHERE project_id IN {projects:Array(String)} AND response_id IN {response_ids:Array(String)};
