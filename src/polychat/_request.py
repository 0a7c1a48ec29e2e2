"""The normalised chat request and its validation: every argument checked before anything is sent.

``create(...)`` keyword arguments fall into three groups:

* OpenAI request parameters (``temperature``, ``tools``, ...): checked for type and forwarded unchanged;
* escape hatches ``extra_body`` / ``extra_headers`` / ``extra_query``: forwarded as given, for vendor parameters;
* call options (``provider``, ``proxy``, ``timeout``, failover switches): used by polychat, never sent.

Anything else is an :class:`~polychat.errors.InvalidRequestError` naming the argument. A parameter passed as
``None`` means "not set" and is left out of the request, as with the ``openai`` package's NOT_GIVEN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from msgspec import Struct, field
from msgspec.structs import replace

from . import _shapes
from ._failover import SWITCHES, UNSET, FailoverPolicy
from .errors import InvalidRequestError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num_range(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not _is_num(v):
            return "must be a number"
        if not lo <= v <= hi:
            return f"must be between {lo:g} and {hi:g}"
        return None

    return check


def _pos_int(v: Any) -> str | None:
    if not _is_int(v):
        return "must be an integer"
    return None if v >= 1 else "must be at least 1"


def _int(v: Any) -> str | None:
    return None if _is_int(v) else "must be an integer"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def _dict(v: Any) -> str | None:
    return None if isinstance(v, Mapping) else "must be an object (dict)"


def _stop(v: Any) -> str | None:
    if isinstance(v, str):
        return None
    if isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v):
        return None
    return "must be a string or a list of strings"


def _str_or_dict(v: Any) -> str | None:
    return None if isinstance(v, (str, Mapping)) else "must be a string or an object (dict)"


def _any(v: Any) -> str | None:
    return None


# The OpenAI Chat Completions request parameters, each with its check. Forwarded to providers unchanged.
PARAMS: dict[str, Callable[[Any], str | None]] = {
    "audio": _dict,
    "frequency_penalty": _num_range(-2, 2),
    "function_call": _str_or_dict,
    "functions": _shapes.functions_problem,
    "logit_bias": _dict,
    "logprobs": _bool,
    "max_completion_tokens": _pos_int,
    "max_tokens": _pos_int,
    "metadata": _dict,
    "modalities": _any,
    "n": _pos_int,
    "parallel_tool_calls": _bool,
    "prediction": _dict,
    "presence_penalty": _num_range(-2, 2),
    "prompt_cache_key": _str,
    "reasoning_effort": _str,
    "response_format": _shapes.response_format_problem,
    "safety_identifier": _str,
    "seed": _int,
    "service_tier": _str,
    "stop": _stop,
    "store": _bool,
    "stream_options": _shapes.stream_options_problem,
    "temperature": _num_range(0, 2),
    "tool_choice": _shapes.tool_choice_problem,
    "tools": _shapes.tools_problem,
    "top_logprobs": _int,
    "top_p": _num_range(0, 1),
    "user": _str,
    "verbosity": _str,
    "web_search_options": _dict,
}

# Arguments that steer polychat itself; never sent to a provider.
CALL_OPTIONS = frozenset(
    {
        "provider",
        "proxy",
        "timeout",
        "extra_headers",
        "extra_query",
        "extra_body",
        # providers that cannot honour a parameter drop it instead of refusing the call (opt-in)
        "drop_unsupported",
        # the request as the client sent it in another protocol (see NativeRequest)
        "native_request",
        # the failover switches (first_token_timeout, resume, ...)
        *SWITCHES,
    }
)


class CallOptions(Struct, frozen=True):
    """The arguments of one ``create()`` call that steer polychat and are never sent (``provider`` and ``proxy``
    as given; they are checked where they are used)."""

    provider: Any = None
    proxy: Any = None
    timeout: Any = None
    failover: FailoverPolicy = UNSET


class NativeRequest(Struct, frozen=True):
    """A request as a client sent it in another protocol than OpenAI's (the gateway's ``/v1/messages``).

    A provider that speaks ``protocol`` natively sends ``body`` (with its own model and stream switch) and
    ``headers`` instead of translating the normalised request, so nothing is lost on the way. ``lossy`` names what
    the normalised request could not carry: any other provider refuses the call naming the first of them (an
    :class:`~polychat.errors.UnsupportedParameterError`, so a failover chain tries the next provider), unless the
    call says ``drop_unsupported=True``.
    """

    protocol: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    lossy: tuple[str, ...] = ()


class ChatRequest(Struct):
    """A validated chat request, independent of any provider's wire format."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    extra_headers: dict[str, str] = field(default_factory=dict)
    extra_query: dict[str, Any] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    #: The ``drop_unsupported`` call option: providers drop parameters they cannot honour instead of refusing.
    drop_unsupported: bool = False
    #: The client's original request in another protocol, for providers that speak it (see NativeRequest).
    native: NativeRequest | None = None

    def with_model(self, model: str) -> ChatRequest:
        return replace(self, model=model)


def _fail(param: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid argument {param}: {problem}.", param=param)


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise _fail("messages", f"must be a list of message dicts, got {type(messages).__name__}")
    if not messages:
        raise _fail("messages", "must not be empty")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise _fail(where, f"must be a dict with 'role' and 'content', got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ROLES:
            raise _fail(f"{where}.role", f"must be one of {', '.join(sorted(ROLES))}; got {role!r}")
        if "content" not in msg and not (role == "assistant" and (msg.get("tool_calls") or msg.get("function_call"))):
            raise _fail(f"{where}.content", "is missing")
        content = msg.get("content")
        if content is None:
            if role not in ("assistant",):
                raise _fail(f"{where}.content", "must be a string or a list of content parts, not None")
        elif isinstance(content, (list, tuple)):
            for j, part in enumerate(content):
                if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                    raise _fail(f"{where}.content[{j}]", "must be a dict with a 'type' such as 'text'")
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise _fail(f"{where}.content[{j}].text", "must be a string")
        elif not isinstance(content, str):
            raise _fail(
                f"{where}.content",
                f"must be a string or a list of content parts, got {type(content).__name__}",
            )
        if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
            raise _fail(f"{where}.tool_call_id", "is required for role 'tool'")
        problem = _shapes.message_calls_problem(msg, where)
        if problem:
            raise InvalidRequestError(f"Invalid argument {problem}.", param=problem.split(" ", 1)[0])
        out.append(dict(msg))
    return out


def build_request(model: Any, messages: Any, stream: Any, kwargs: Mapping[str, Any]) -> tuple[ChatRequest, CallOptions]:
    """Validate ``create()`` arguments; return the request and the call options (provider, proxy, timeout...)."""
    if not isinstance(model, str):
        raise _fail("model", f"must be a string, got {type(model).__name__}")
    if not isinstance(stream, bool):
        raise _fail("stream", "must be true or false")
    msgs = validate_messages(messages)
    params, options, unknown = _sort_kwargs(kwargs)
    failover = FailoverPolicy.checked(options, _fail)
    native = options.pop("native_request", None)
    if native is not None and not isinstance(native, NativeRequest):
        raise _fail("native_request", "must be a polychat._request.NativeRequest")
    if options.get("drop_unsupported") is not None and not isinstance(options["drop_unsupported"], bool):
        raise _fail("drop_unsupported", "must be true or false")
    if unknown:
        names = ", ".join(sorted(unknown))
        raise InvalidRequestError(
            f"Unknown argument(s) to create(): {names}. Vendor-specific parameters go in extra_body={{...}}.",
            param=unknown[0],
        )
    _check_pairs(params, stream)
    headers, query, body = _extras(options)
    req = ChatRequest(
        model=model,
        messages=msgs,
        stream=stream,
        params=params,
        extra_headers=headers,
        extra_query=query,
        extra_body=body,
        drop_unsupported=bool(options.get("drop_unsupported")),
        native=native,
    )
    call = CallOptions(options.get("provider"), options.get("proxy"), options.get("timeout"), failover)
    return req, call


def _sort_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``create()``'s keyword arguments sorted into OpenAI parameters (each checked; None left out), call options,
    and the names of neither."""
    params: dict[str, Any] = {}
    options: dict[str, Any] = {}
    unknown = []
    for key, value in kwargs.items():
        if key in PARAMS:
            if value is None:
                continue
            problem = PARAMS[key](value)
            if problem:
                raise _fail(key, problem)
            params[key] = value
        elif key in CALL_OPTIONS:
            options[key] = value
        else:
            unknown.append(key)
    return params, options, unknown


def _check_pairs(params: Mapping[str, Any], stream: bool) -> None:
    """Parameters that are each valid but not together (or not without the stream)."""
    if "stream_options" in params and not stream:
        raise _fail("stream_options", "is only allowed with stream=True")
    if "top_logprobs" in params and not params.get("logprobs"):
        raise _fail("top_logprobs", "requires logprobs=True")
    if "max_tokens" in params and "max_completion_tokens" in params:
        raise _fail("max_tokens", "and max_completion_tokens are both set; pass one")


def _extras(options: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The escape hatches, taken out of ``options`` and checked: ``extra_headers`` (valid HTTP headers, as
    strings), ``extra_query``, ``extra_body`` (which may not replace the model or the messages)."""
    extras: dict[str, dict[str, Any]] = {}
    for name in ("extra_headers", "extra_query", "extra_body"):
        value = options.pop(name, None)
        if value is None:
            extras[name] = {}
        elif not isinstance(value, Mapping):
            raise _fail(name, "must be a dict")
        else:
            extras[name] = dict(value)
    if "messages" in extras["extra_body"] or "model" in extras["extra_body"]:
        raise _fail("extra_body", "must not set 'model' or 'messages'; pass them as arguments")
    for name, value in extras["extra_headers"].items():
        problem = _shapes.header_problem(name, value)
        if problem:
            raise _fail("extra_headers", problem)
    headers = {str(k): str(v) for k, v in extras["extra_headers"].items()}
    return headers, extras["extra_query"], extras["extra_body"]
