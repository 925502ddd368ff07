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
