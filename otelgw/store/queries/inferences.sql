-- name: inference_by_id
SELECT
    inference_id, project_id, trace_id, span_id, parent_span_id,
    toUnixTimestamp64Nano(timestamp) AS timestamp_ns, toUnixTimestamp64Nano(end_timestamp) AS end_timestamp_ns,
    service_name, span_name, span_kind, scope_name, family, operation, provider, request_model, response_model,
    input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, total_tokens, cost_usd, cost_source,
    latency_ms, ttft_ms, ttft_source, is_streaming, is_success, error_type, error_message, finish_reason,
    response_id, session_id, user_id, input_preview, output_preview, attributes
FROM inferences FINAL
WHERE inference_id = {inference_id:UUID}
LIMIT 1;

-- name: messages_by_inference
SELECT direction, `index`, role, content, tool_calls, tool_call_id, name, finish_reason, source,
       toUnixTimestamp64Nano(timestamp) AS timestamp_ns
FROM messages FINAL
WHERE inference_id = {inference_id:UUID}
ORDER BY direction = 'output', `index`;

-- name: feedback_by_inference
SELECT feedback_id, kind, name, value, label, comment, source, created_by, response_id,
       toUnixTimestamp64Nano(timestamp) AS timestamp_ns
FROM feedback FINAL
WHERE inference_id = {inference_id:UUID}
   OR (response_id != '' AND response_id = {response_id:String})
ORDER BY timestamp, feedback_id;
