"""Anthropic Messages ⇄ polychat's normalised (OpenAI-shaped) request and answers, both ways, pure.

Wire facts (https://docs.anthropic.com/en/api/messages, /messages-streaming, /errors):

* request: ``model``, ``max_tokens`` (required), ``messages`` (``user``/``assistant`` turns, content a string or
  blocks: ``text``, ``image``, ``tool_use``, ``tool_result``, ``thinking``, ``redacted_thinking``), ``system`` (a
  string or text blocks), ``tools`` (``name``, ``description``, ``input_schema``), ``tool_choice`` (``auto``,
  ``any``, ``tool``, ``none``, with ``disable_parallel_tool_use``), ``stop_sequences``, ``temperature``,
  ``top_p``, ``top_k``, ``metadata.user_id``, ``thinking``, ``output_config`` (``effort``, ``format``), top-level
  ``cache_control``, ``stream``;
* answer: ``{"id", "type": "message", "role": "assistant", "model", "content": [blocks], "stop_reason",
  "stop_sequence", "usage": {"input_tokens", "output_tokens", "cache_creation_input_tokens",
  "cache_read_input_tokens"}}`` — ``input_tokens`` excludes cached tokens, unlike OpenAI's ``prompt_tokens``;
* stream: ``message_start``, ``ping``, per block ``content_block_start`` / ``content_block_delta`` (``text_delta``,
  ``input_json_delta``, ``thinking_delta``, ``signature_delta``) / ``content_block_stop``, ``message_delta``
  (``stop_reason``, usage), ``message_stop``; after a 200, a failure is ``event: error``;
* errors: ``{"type": "error", "error": {"type", "message"}}`` with ``invalid_request_error`` (400),
  ``authentication_error`` (401), ``permission_error`` (403), ``not_found_error`` (404), ``request_too_large``
  (413), ``rate_limit_error`` (429), ``api_error`` (500), ``overloaded_error`` (529).

Any provider can answer: the request becomes OpenAI-shaped messages and parameters. What that shape cannot carry
is kept in :class:`~polychat._request.NativeRequest` (``lossy`` names it): a provider speaking Anthropic's protocol
gets the client's body unchanged (thinking blocks and their signatures, ``cache_control``, ``top_k``, documents,
server tools...), every other provider refuses the request naming the first such field, unless the client opted in
to dropping (``x-polychat-drop-unsupported: true``). ``cache_control`` and earlier turns' thinking blocks are the
exception: they do not change an answer (Anthropic itself leaves old thinking out of the context), so they are
left out for other providers, and the answer's ``x-polychat-dropped`` header says so.

Answers from an Anthropic provider come back as its own events and bodies (``chunk.native``), forwarded as sent;
answers from any other provider are translated by :class:`MessageStream` and :func:`to_message`.

This module is the public face: the request half is in ``_messages_request``, the answer half in
``_messages_answer``, what they share with :mod:`.responses` in ``_common``.
"""

from __future__ import annotations

from ._messages_answer import ERROR_TYPES as ERROR_TYPES
from ._messages_answer import STOP_REASONS as STOP_REASONS
from ._messages_answer import MessageStream as MessageStream
from ._messages_answer import error_body as error_body
from ._messages_answer import event as event
from ._messages_answer import message_id as message_id
from ._messages_answer import to_message as to_message
from ._messages_answer import usage_of as usage_of
from ._messages_request import ANTHROPIC_ONLY as ANTHROPIC_ONLY
from ._messages_request import EFFORTS as EFFORTS
from ._messages_request import HINTS as HINTS
from ._messages_request import PROTOCOL as PROTOCOL
from ._messages_request import ChatCall as ChatCall
from ._messages_request import to_chat as to_chat
