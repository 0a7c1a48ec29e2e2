"""OpenAI Responses ⇄ polychat's normalised (Chat Completions-shaped) request and answers, both ways, pure.

Wire facts (https://platform.openai.com/docs/api-reference/responses, .../responses-streaming):

* request: ``model``, ``input`` (a string, or items: messages with ``input_text`` / ``input_image`` /
  ``output_text`` parts, ``function_call``, ``function_call_output``), ``instructions`` (a system message first),
  ``tools`` (``{"type": "function", "name", "description", "parameters", "strict"}``), ``tool_choice``,
  ``text.format`` (``text``, ``json_object``, ``json_schema`` with ``name``/``schema``/``strict``),
  ``max_output_tokens``, ``temperature``, ``top_p``, ``parallel_tool_calls``, ``reasoning.effort``, ``metadata``,
  ``user``, ``stream``;
* answer: ``{"id": "resp_…", "object": "response", "created_at", "status", "model", "output": [items],
  "usage": {"input_tokens", "input_tokens_details": {"cached_tokens"}, "output_tokens",
  "output_tokens_details": {"reasoning_tokens"}, "total_tokens"}, ...}`` with the request's settings echoed;
  items are ``message`` (``output_text`` parts) and ``function_call`` (``call_id``, ``name``, ``arguments``);
* stream: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta`` / ``.done``, ``response.content_part.done``,
  ``response.function_call_arguments.delta`` / ``.done``, ``response.output_item.done``, then
  ``response.completed`` (``response.incomplete`` when ``max_output_tokens`` cut it); each event carries a
  ``sequence_number``; a failure after the stream started is ``error`` then ``response.failed``.

polychat keeps no state: ``store`` true and ``previous_response_id`` are refused with a 400 that says so (``store``
left out means false here, not OpenAI's true). Built-in tools (web search, file search, computer use...),
``background``, ``conversation`` and prompt templates are refused by name, like any field this code does not know.

This module is the public face: the request half is in ``_responses_request``, the answer half in
``_responses_answer``, what they share with :mod:`.anthropic_messages` in ``_common``.
"""

from __future__ import annotations

from ._common import new_id as new_id
from ._responses_answer import Event as Event
from ._responses_answer import ResponseStream as ResponseStream
from ._responses_answer import call_item as call_item
from ._responses_answer import message_item as message_item
from ._responses_answer import response_object as response_object
from ._responses_answer import sse as sse
from ._responses_answer import to_response as to_response
from ._responses_answer import usage_of as usage_of
from ._responses_request import ECHOED as ECHOED
from ._responses_request import ResponsesCall as ResponsesCall
from ._responses_request import input_messages as input_messages
from ._responses_request import to_chat as to_chat
