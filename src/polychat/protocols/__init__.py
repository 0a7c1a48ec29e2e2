"""Client protocols other than OpenAI Chat Completions, translated to and from polychat's normalised request and
answers in one place, both ways, as pure code (no I/O): the gateway's endpoints and the library's
``client.responses`` use the same functions.

* :mod:`.anthropic_messages` — Anthropic Messages (``POST /v1/messages``);
* :mod:`.responses` — OpenAI Responses (``POST /v1/responses``).
"""
