-- name: inference_by_id
SELECT
    inference_id, project_id, trace_id, span_id, parent_span_id,
    toUnixTimestamp64Nano(timestamp) AS timestamp_ns, toUnixTimestamp64Nano(end_timestamp) AS end_timestamp_ns,
    service_name, span_name, span_kind, scope_name, family, operation, provider, request_model, response_model,
    input_tokens, output_tokens, cached_input_tokens, cache_write_input_tokens, reasoning_tokens, total_tokens,
    cost_usd, cost_source,
    latency_ms, ttft_ms, ttft_source, is_streaming, is_success, error_type, error_message, finish_reason,
    response_id, session_id, user_id, input_preview, output_preview, attributes
FROM inferences FINAL
WHERE project_id = {project_id:String}
  AND timestamp = fromUnixTimestamp64Nano({timestamp_ns:Int64}, 'UTC')
  AND inference_id = {inference_id:UUID}
LIMIT 1;

-- name: inference_key
SELECT project_id, toUnixTimestamp64Nano(timestamp) AS timestamp_ns
FROM inference_lookup
WHERE inference_id = {inference_id:UUID}
LIMIT 1;

-- name: messages_by_inference
-- In order (schema/015_message_arrival.sql): a span's messages by index; messages sent as log
-- records as they came. `index` is renumbered by the API.
SELECT direction, `index`, role, content, tool_calls, tool_call_id, name, finish_reason, source,
       toUnixTimestamp64Nano(timestamp) AS timestamp_ns
FROM messages FINAL
WHERE inference_id = {inference_id:UUID} AND project_id = {project_id:String}
ORDER BY direction = 'output', arrival, `index`;

-- name: feedback_by_inference
SELECT feedback_id, kind, name, value, label, comment, source, created_by, response_id, trace_id, span_id,
       toUnixTimestamp64Nano(timestamp) AS timestamp_ns
FROM feedback FINAL
WHERE inference_id = {inference_id:UUID} AND project_id = {project_id:String}
UNION DISTINCT
SELECT feedback_id, kind, name, value, label, comment, source, created_by, response_id, trace_id, span_id,
       toUnixTimestamp64Nano(timestamp) AS timestamp_ns
FROM feedback
WHERE {response_id:String} != '' AND response_id = {response_id:String} AND project_id = {project_id:String};

-- name: spans_of_trace
SELECT span_id, parent_span_id, name, kind, toUnixTimestamp64Nano(start_time) AS start_ns,
       toUnixTimestamp64Nano(end_time) AS end_ns, status_code, status_message, attributes, resource_attributes,
       scope_name, scope_version, events, links, service_name, inference_id
FROM spans FINAL
WHERE trace_id = {trace_id:String} AND project_id = {project_id:String}
ORDER BY start_time
LIMIT 2000;

-- name: model_baseline
SELECT count() AS samples,
       quantiles(0.5, 0.95)(latency_ms) AS latency_q,
       quantilesIf(0.5, 0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft_q
FROM inferences
WHERE project_id = {project_id:String}
  AND timestamp >= fromUnixTimestamp64Nano({until_ns:Int64}, 'UTC') - toIntervalHour({hours:UInt32})
  AND timestamp < fromUnixTimestamp64Nano({until_ns:Int64}, 'UTC') + toIntervalSecond(1)
  AND (response_model = {model:String} OR request_model = {model:String})
  AND is_success;

-- name: previews_from_messages
-- Clipped here: a page of agent calls must not carry their whole histories back.
SELECT project_id, inference_id,
       leftUTF8(if(countIf(direction = 'input' AND role = 'user') > 0,
                   argMaxIf(content, (arrival, `index`), direction = 'input' AND role = 'user'),
                   argMaxIf(content, (arrival, `index`), direction = 'input')), {limit:UInt32} + 1)
           AS input_text,
       leftUTF8(argMinIf(content, (arrival, `index`), direction = 'output'), {limit:UInt32} + 1)
           AS first_output,
       argMinIf(tool_calls, (arrival, `index`), direction = 'output') AS first_output_calls,
       argMinIf(finish_reason, (arrival, `index`), direction = 'output' AND finish_reason != '')
           AS finish_reason
FROM messages FINAL
WHERE inference_id IN {ids:Array(UUID)} AND project_id IN {projects:Array(String)}
GROUP BY project_id, inference_id;
