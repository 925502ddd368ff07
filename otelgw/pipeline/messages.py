"""Message shapes: every way a convention family carries chat messages, normalised to Message.

A shape is code; which attribute holds which shape is data (semconv/*.toml `messages`).
Nothing here raises on odd input: an unreadable value yields no messages, and the raw value
stays in the row's attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from otelgw.pipeline.anyvalue import to_json
from otelgw.semconv import MessageSpec

_decode = msgspec.json.Decoder()

# Roles an OpenLIT-style "role: content" prompt line may start with.
_LINE_ROLES = ("system", "user", "assistant", "tool", "developer", "function", "model", "human", "ai")

# Legacy per-message GenAI events (semconv <= 1.36), as span events or log records.
LEGACY_INPUT_EVENTS: dict[str, str] = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
LEGACY_OUTPUT_EVENT = "gen_ai.choice"


class ToolCall(msgspec.Struct, omit_defaults=True, gc=False):
    id: str = ""
    name: str = ""
    arguments: str = ""


class Message(msgspec.Struct, gc=False):
    role: str
    content: str = ""
    tool_calls: list[ToolCall] = []
    tool_call_id: str = ""
    name: str = ""
    finish_reason: str = ""


def parse_json_text(value: Any) -> Any:
    """A JSON document if `value` is JSON text for an object or array, else None."""
    if isinstance(value, (bytes, str)) and value[:1] in ("[", "{", b"[", b"{"):
        try:
            return _decode.decode(value)
        except (msgspec.DecodeError, ValueError, RecursionError):
            return None
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return to_json(value)


def _arguments(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else to_json(value)


def _tool_call(raw: Any) -> ToolCall | None:
    if not isinstance(raw, dict):
        return None
    fn = raw.get("function")
    if isinstance(fn, dict):  # OpenAI: {id, type: function, function: {name, arguments}}
        return ToolCall(_text(raw.get("id")), _text(fn.get("name")), _arguments(fn.get("arguments")))
    name = raw.get("name") or raw.get("toolName") or raw.get("tool_name")
    if name is None:
        return None
    args = next((raw[k] for k in ("arguments", "args", "input", "parameters") if k in raw), None)
    call_id = raw.get("id") or raw.get("toolCallId") or raw.get("tool_call_id") or ""
    return ToolCall(_text(call_id), _text(name), _arguments(args))


_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_TOOL_CALL_PARTS = frozenset({"tool_call", "tool-call", "tool_use", "function_call"})
_TOOL_RESULT_PARTS = frozenset({"tool_call_response", "tool-result", "tool_result", "function_call_output"})
# Part types that are media (a typed part of another kind, a tool_use block say, is read elsewhere).
_MEDIA_KINDS = frozenset({"image", "image_url", "input_image", "audio", "input_audio", "video", "file", "document",
                          "blob", "uri"})
_VERCEL_OUTPUTS = frozenset({"text", "json", "error-text", "error-json", "content"})
_VERCEL_OUTPUT_KEYS = frozenset({"type", "value", "providerOptions"})


def _gemini_part(part: dict[str, Any]) -> dict[str, Any]:
    """A google-genai `Part` as its SDK dumps it (Google ADK's legacy message events): no `type`,
    one of text / function_call / function_response set (snake_case or the API's camelCase), the
    others null. Read as the OTel part it is; a part without those keys is left as it is."""
    call = part.get("function_call") or part.get("functionCall")
    if isinstance(call, dict):
        return {"type": "tool_call", "id": call.get("id") or "", "name": call.get("name"),
                "arguments": call.get("args")}
    result = part.get("function_response") or part.get("functionResponse")
    if isinstance(result, dict):
        return {"type": "tool_call_response", "id": result.get("id") or "", "name": result.get("name"),
                "response": result.get("response")}
    if part.get("thought") is True:
        return {"type": "reasoning"}
    for media in ("inline_data", "inlineData", "file_data", "fileData", "executable_code", "executableCode",
                  "code_execution_result", "codeExecutionResult"):
        if part.get(media) is not None:
            return {"type": media}  # a marker, as typed media parts get
    return part


# Bedrock Converse content blocks (Strands Agents' message events and tool results): no `type`,
# one key naming the block.
_CONVERSE_BLOCKS = frozenset({"text", "toolUse", "toolResult", "reasoningContent", "image", "document", "video",
                              "cachePoint", "guardContent", "citationsContent"})


def _converse_part(part: dict[str, Any]) -> dict[str, Any]:
    """A Bedrock Converse content block (as Strands Agents serialises its messages) read as the
    OTel part it is; a part that is no such block is left as it is."""
    if len(part) != 1 or next(iter(part)) not in _CONVERSE_BLOCKS:
        return part  # another library's untyped part ({text, image} together, say)
    use = part.get("toolUse")
    if isinstance(use, dict):
        return {"type": "tool_call", "id": use.get("toolUseId") or "", "name": use.get("name"),
                "arguments": use.get("input")}
    result = part.get("toolResult")
    if isinstance(result, dict):
        return {"type": "tool_call_response", "id": result.get("toolUseId") or "", "response": result.get("content")}
    if "reasoningContent" in part:
        return {"type": "reasoning"}
    for kind in ("image", "document", "video"):
        if kind in part:
            return {"type": kind}
    if "cachePoint" in part:
        return {"type": "reasoning"}  # a cache marker: no content
    cited = part.get("citationsContent")
    if isinstance(cited, dict):  # Bedrock's answer with citations: its text blocks
        return {"type": "text", "content": "".join(_text(b.get("text")) for b in cited.get("content") or ()
                                                   if isinstance(b, dict))}
    guarded = part.get("guardContent")
    if isinstance(guarded, dict):
        inner = guarded.get("text")
        return {"type": "text", "content": _text(inner.get("text") if isinstance(inner, dict) else inner)}
    if "text" in part:
        return part
    return {"type": next(iter(part))}  # a block read no further: a marker, never nothing


def converse_blocks(value: Any) -> list[dict[str, Any]] | None:
    """A list of Converse content blocks, from JSON text or as it is; None for anything else."""
    doc = parse_json_text(value) if isinstance(value, (str, bytes)) else value
    if isinstance(doc, list) and doc and all(
            isinstance(b, dict) and "type" not in b and len(b) == 1 and next(iter(b)) in _CONVERSE_BLOCKS
            for b in doc):
        return doc
    return None


def _result_text(result: Any) -> str:
    """A tool result; a list of text blocks ({text} or {type: text, content|text}) is its text."""
    if isinstance(result, list) and result and all(
            isinstance(b, dict) and isinstance(b.get("text", b.get("content")), str)
            and (set(b) == {"text"} or (b.get("type") == "text" and set(b) <= {"type", "text", "content"}))
            for b in result):
        return "\n".join(_text(b.get("text", b.get("content"))) for b in result)
    return _text(result)


class _Result(msgspec.Struct):
    call_id: str
    text: str
    name: str


def _parts(parts: list[Any], msg: Message, results: list[_Result] | None = None) -> None:
    """Fills `msg` from its parts; `results` receives each tool result."""
    texts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            continue
        if "type" not in part:
            part = _converse_part(_gemini_part(part))
        kind = part.get("type", "text")
        if kind in _TEXT_PARTS:
            texts.append(_text(part.get("content", part.get("text"))))
        elif kind in _TOOL_CALL_PARTS:
            call = _tool_call(part)
            if call:
                msg.tool_calls.append(call)
        elif kind in _TOOL_RESULT_PARTS:
            call_id = _text(part.get("id") or part.get("tool_use_id") or part.get("toolCallId") or part.get("call_id"))
            msg.tool_call_id = msg.tool_call_id or call_id
            result = next((part[k] for k in ("response", "content", "result", "output") if k in part), None)
            if kind == "tool-result" and isinstance(result, dict) and "value" in result \
                    and result.get("type") in _VERCEL_OUTPUTS and set(result) <= _VERCEL_OUTPUT_KEYS:
                # The AI SDK 5+ wraps a tool's output: {type: "json", value}; errors keep a marker.
                value = result["value"]
                result = f"[error] {_text(value)}" if str(result["type"]).startswith("error") else value
            texts.append(_result_text(result))
            if results is not None:
                results.append(_Result(call_id, texts[-1], _text(part.get("name") or part.get("toolName"))))
        elif kind == "reasoning":
            continue
        else:  # media (blob, uri, image_url, file): a marker, never the bytes
            texts.append(f"[{kind}]")
    msg.content = "\n".join(t for t in texts if t)


def normalize(raw: Any, default_role: str) -> list[Message]:
    """One chat message in any common JSON shape (OpenAI, OTel parts, Anthropic, Vercel). A turn
    made only of several tool results is one tool message per result, as OpenAI sends them: each
    keeps its call id."""
    if isinstance(raw, str):
        return [Message(role=default_role or "user", content=raw)]
    if not isinstance(raw, dict):
        return []
    content = raw.get("parts", raw.get("content"))
    if (raw.get("role") == "tool" and isinstance(content, dict) and content.get("type") == "function"
            and isinstance(content.get("function"), dict) and "tool_call_id" not in raw):
        # A tool's definition, not a message: Langfuse's LangChain handler appends each bound
        # tool to the generation's input this way (the model received them as `tools`).
        return []
    if isinstance(content, dict) and isinstance(content.get("parts"), list):
        # A Gemini Content under `content` (Google ADK's legacy events, which send every turn of
        # the history as a user message event): its own role says who spoke, unless the event
        # says system (Gemini gives system instructions role "user").
        content_role = "system" if default_role == "system" else content.get("role")
        raw = {**raw, "role": content_role or raw.get("role") or default_role}
        content = content["parts"]
    msg = Message(role=_text(raw.get("role")) or default_role or "user")
    results: list[_Result] = []
    if isinstance(content, list):
        _parts(content, msg, results)
    elif isinstance(content, dict):
        _parts([content], msg)
    else:
        msg.content = _text(content)
    calls = raw.get("tool_calls")
    if isinstance(calls, list):
        # A call the content's blocks already hold (the botocore Bedrock events send both) once.
        known = {c.id for c in msg.tool_calls if c.id}
        msg.tool_calls.extend(c for c in (_tool_call(x) for x in calls) if c and not (c.id and c.id in known))
    elif isinstance(raw.get("function_call"), dict):
        call = _tool_call({"function": raw["function_call"]})
        if call:
            msg.tool_calls.append(call)
    if not msg.tool_call_id:
        call_id = raw.get("tool_call_id")
        if call_id is None and msg.role == "tool":
            call_id = raw.get("id")
        msg.tool_call_id = _text(call_id)
    msg.name = _text(raw.get("name"))
    msg.finish_reason = _text(raw.get("finish_reason"))
    return _tool_turn(msg, content, results)


def _tool_turn(msg: Message, content: Any, results: list[_Result]) -> list[Message]:
    """A turn made only of tool results (as the user's turn: Pydantic AI's data format 5,
    Anthropic's tool_result blocks, untyped Gemini and Converse dumps) has the conventions' role
    "tool"; several results are one tool message each, with its call id (the Gemini API gives
    none) and tool name, as OpenAI sends them."""
    if not (results and isinstance(content, list) and len(results) == len(content) and not msg.tool_calls
            and msg.role in ("user", "tool", "function")):
        return [msg]
    msg.role = "tool"
    if len(results) == 1:
        msg.name = msg.name or results[0].name
        return [msg]
    return [Message(role="tool", content=r.text, tool_call_id=r.call_id, name=r.name or msg.name,
                    finish_reason=msg.finish_reason) for r in results]


class _TextPart(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    content: str


class _PartsMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    parts: list[_TextPart]
    finish_reason: str | None = None


# The OTel GenAI shape (`gen_ai.input.messages` / `gen_ai.output.messages`) with text parts only,
# decoded into structs: a third of the cost of a generic decode and `normalize`. Anything else
# (another key, a non-text part, a non-string value) fails the decode and takes the general path,
# which gives the same messages for this shape (tests/test_mapper.py checks both ways).
_decode_text_parts = msgspec.json.Decoder(list[_PartsMessage])


def _text_parts_messages(value: str | bytes, default_role: str) -> list[Message] | None:
    try:
        decoded = _decode_text_parts.decode(value)
    except (msgspec.DecodeError, ValueError, RecursionError):  # ValueError: bytes that are not UTF-8
        return None
    out: list[Message] = []
    for raw in decoded:
        texts = []
        for part in raw.parts:
            if part.type not in _TEXT_PARTS:
                return None
            if part.content:
                texts.append(part.content)
        out.append(Message(role=raw.role or default_role or "user", content="\n".join(texts),
                           finish_reason=raw.finish_reason or ""))
    return out


def from_json(value: Any, default_role: str) -> list[Message]:
    """Messages from a JSON string or structured value: a list of messages, one message, an
    OpenAI request (`messages`) or response (`choices`), or plain text."""
    if isinstance(value, (str, bytes)) and value[:1] in ("[", b"["):
        fast = _text_parts_messages(value, default_role)
        if fast is not None:
            return fast
    return _from_json_general(value, default_role)


def _from_json_general(value: Any, default_role: str) -> list[Message]:
    doc = value
    if isinstance(value, (str, bytes)):
        doc = parse_json_text(value)
        if doc is None:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            return [Message(role=default_role or "user", content=text)] if text else []
    if isinstance(doc, dict):
        if isinstance(doc.get("messages"), list):
            doc = doc["messages"]
        elif isinstance(doc.get("choices"), list):
            out: list[Message] = []
            for choice in doc["choices"]:
                if not isinstance(choice, dict):
                    continue
                for msg in normalize(choice.get("message") or choice.get("delta") or {"content": choice.get("text")},
                                     default_role or "assistant"):
                    msg.finish_reason = msg.finish_reason or _text(choice.get("finish_reason"))
                    out.append(msg)
            return out
        elif isinstance(doc.get("toolCalls"), list) and "text" in doc and not ("role" in doc or "content" in doc):
            # An AI SDK step's result ({text, toolCalls}: Mastra's model steps): one answer.
            msg = Message(role=default_role or "assistant", content=_text(doc.get("text")))
            msg.tool_calls.extend(c for c in (_tool_call(x) for x in doc["toolCalls"]) if c)
            return [msg]
        elif not ("role" in doc or "content" in doc or "parts" in doc):
            return [Message(role=default_role or "user", content=to_json(doc))]
        else:
            doc = [doc]
    if isinstance(doc, list):
        if doc and all(isinstance(p, dict) and "type" in p and "role" not in p for p in doc):
            # A bare list of parts (gen_ai.system_instructions): one message.
            msg = Message(role=default_role or "user")
            _parts(doc, msg)
            return [msg]
        return [m for item in doc for m in normalize(item, default_role)]
    return []


def from_role_lines(text: Any) -> list[Message]:
    """OpenLIT's `gen_ai.prompt`: one `role: content` line per message; other lines continue
    the message above."""
    if not isinstance(text, str) or not text:
        return []
    out: list[Message] = []
    for line in text.split("\n"):
        role, sep, rest = line.partition(": ")
        if sep and role.strip().lower() in _LINE_ROLES:
            out.append(Message(role=role.strip().lower(), content=rest))
        elif out:
            out[-1].content += "\n" + line
        else:
            out.append(Message(role="user", content=line))
    return out


def from_text(spec: MessageSpec, attrs: dict[str, Any], value: Any) -> list[Message]:
    msg = Message(role=spec.default_role or "assistant", content=_text(value))
    if spec.tool_calls_attribute:
        raw = attrs.get(spec.tool_calls_attribute)
        doc = parse_json_text(raw) if isinstance(raw, str) else raw
        if isinstance(doc, list):
            msg.tool_calls.extend(c for c in (_tool_call(x) for x in doc) if c)
    if spec.tool_name_attribute and attrs.get(spec.tool_name_attribute):
        msg.tool_calls.append(ToolCall(_text(attrs.get(spec.tool_id_attribute, "")),
                                       _text(attrs[spec.tool_name_attribute]),
                                       _arguments(attrs.get(spec.tool_arguments_attribute))))
    if not msg.content and not msg.tool_calls:
        return []
    return [msg]


def _small_index(text: str) -> bool:
    """An ASCII decimal index of sane size ("²" is a digit to str.isdigit, and a 5000-digit
    number would cost a quadratic int() and mean nothing)."""
    return 0 < len(text) <= 6 and text.isascii() and text.isdigit()


def _split_pattern(pattern: str) -> tuple[str, str] | None:
    if not pattern:
        return None
    head, sep, tail = pattern.partition("{j}")
    return (head, tail) if sep else None


def from_indexed(spec: MessageSpec, attrs: dict[str, Any]) -> list[Message]:
    """Flattened messages: `{prefix}{i}.{sub}` attributes, e.g. llm.input_messages.0.message.role."""
    prefix = spec.prefix
    by_index: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        idx, dot, sub = key[len(prefix):].partition(".")
        if not dot or not _small_index(idx):
            continue
        by_index.setdefault(int(idx), {})[sub] = value
    if not by_index:
        return []
    parts_pat = _split_pattern(spec.content_parts)
    type_pat = _split_pattern(spec.content_part_type)
    tool_pats = {field: _split_pattern(getattr(spec, field)) for field in ("tool_name", "tool_arguments", "tool_id")}
    out: list[Message] = []
    for idx in sorted(by_index):
        subs = by_index[idx]
        role = _text(subs.get(spec.role)) if spec.role else ""
        msg = Message(role=role or spec.default_role or ("assistant" if spec.direction == "output" else "user"))
        content = subs.get(spec.content) if spec.content else None
        parts_doc: list[Any] | None = None
        results: list[_Result] = []
        if spec.content_may_be_json and isinstance(content, str):
            doc = parse_json_text(content)
            if isinstance(doc, list):
                _parts(doc, msg, results)
                parts_doc, content = doc, None
        if content is not None:
            msg.content = _text(content)
        parts: dict[int, str] = {}
        kinds: dict[int, str] = {}
        calls: dict[int, dict[str, Any]] = {}
        for sub, value in subs.items():
            if parts_pat and sub.startswith(parts_pat[0]) and sub.endswith(parts_pat[1]):
                j = sub[len(parts_pat[0]):len(sub) - len(parts_pat[1])]
                if _small_index(j):
                    parts[int(j)] = _text(value)
                continue
            if type_pat and sub.startswith(type_pat[0]) and sub.endswith(type_pat[1]):
                j = sub[len(type_pat[0]):len(sub) - len(type_pat[1])]
                if _small_index(j):
                    kinds[int(j)] = _text(value)
                continue
            for field, pat in tool_pats.items():
                if pat and sub.startswith(pat[0]) and sub.endswith(pat[1]):
                    j = sub[len(pat[0]):len(sub) - len(pat[1])]
                    if _small_index(j):
                        calls.setdefault(int(j), {})[field] = value
                    break
        for j, kind in kinds.items():
            if j not in parts and kind in _MEDIA_KINDS:
                parts[j] = f"[{kind}]"  # a marker, never the bytes
        if parts and not msg.content:
            msg.content = "\n".join(parts[j] for j in sorted(parts))
        for j in sorted(calls):
            call = calls[j]
            msg.tool_calls.append(ToolCall(_text(call.get("tool_id")), _text(call.get("tool_name")),
                                           _arguments(call.get("tool_arguments"))))
        if not msg.tool_calls and spec.function_name and subs.get(spec.function_name):
            msg.tool_calls.append(ToolCall("", _text(subs[spec.function_name]),
                                           _arguments(subs.get(spec.function_arguments))))
        if spec.tool_call_id and subs.get(spec.tool_call_id) is not None:
            msg.tool_call_id = _text(subs.get(spec.tool_call_id))
        if spec.name:
            msg.name = _text(subs.get(spec.name))
        if spec.finish_reason:
            msg.finish_reason = _text(subs.get(spec.finish_reason))
        out.extend(_tool_turn(msg, parts_doc, results))
    return out


def legacy_event(name: str, body: Any, attrs: dict[str, Any],
                 converse: bool = False) -> tuple[str, list[Message], int | None] | None:
    """One legacy GenAI message event: (direction, its messages, choice index or None); an input
    event holding several tool results is one message per result. `converse`: the library sends
    its messages as Bedrock Converse blocks in JSON text (Strands Agents)."""
    if isinstance(body, str) and body[:1] in ("{", "["):
        body = parse_json_text(body) or body
    if body is None:
        if "gen_ai.event.content" in attrs:
            body = parse_json_text(attrs["gen_ai.event.content"])
        else:  # a span event: the body's fields are its attributes
            body = {k: v for k, v in attrs.items() if not k.startswith("gen_ai.")} or None
    if converse and isinstance(body, dict):
        # Strands Agents: the message's Converse content blocks as JSON text under content / message.
        for key in ("content", "message"):
            blocks = converse_blocks(body.get(key)) if isinstance(body.get(key), str) else None
            if blocks is not None:
                body = {**body, key: blocks}
    role = LEGACY_INPUT_EVENTS.get(name)
    if role is not None:
        # A system event is the system's, whatever its body says (the official Vertex AI
        # instrumentation gives Gemini's system instruction its role "user").
        forced = {"role": role} if role == "system" else {}
        found = normalize({"role": role, **body, **forced}, role) if isinstance(body, dict) else [
            Message(role=role, content=_text(body))]
        if not found:
            return None
        if role == "tool" and isinstance(body, dict) and len(found) == 1:
            found[0].tool_call_id = _text(body.get("id") or body.get("tool_call_id")) or found[0].tool_call_id
        return "input", found, None
    if name == LEGACY_OUTPUT_EVENT:
        if not isinstance(body, dict):
            return "output", [Message(role="assistant", content=_text(body))], None
        inner = body.get("message")
        if inner is None and isinstance(body.get("content"), dict):
            inner = body  # a Gemini Content under `content` (Google ADK's legacy gen_ai.choice)
        found = normalize(inner if isinstance(inner, dict) else {"content": inner}, "assistant")
        found = found or [Message("assistant")]
        for msg in found:
            msg.finish_reason = _text(body.get("finish_reason")) or msg.finish_reason
        index = body.get("index")
        return "output", found, index if isinstance(index, int) and not isinstance(index, bool) else None
    return None


def without_repeated_results(messages: list[Message]) -> list[Message]:
    """The conversation with a tool result sent twice (same call id, same content) once: the
    botocore Bedrock events give each result as a gen_ai.tool.message and again in the user turn
    of toolResult blocks that carried them. A call id answers one call, once."""
    seen: set[tuple[str, str]] = set()
    out: list[Message] = []
    for msg in messages:
        if msg.role == "tool" and msg.tool_call_id:
            key = (msg.tool_call_id, msg.content)
            if key in seen:
                continue
            seen.add(key)
        out.append(msg)
    return out


def tool_calls_json(calls: Iterable[ToolCall]) -> str:
    items = list(calls)
    return to_json([msgspec.to_builtins(c) for c in items]) if items else ""
