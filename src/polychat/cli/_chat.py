"""``polychat chat``: its options and help, reading the prompt (arguments and/or stdin), and running it once
or interactively (the conversation itself is :class:`~polychat.cli._session.ChatSession`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._errors import EXIT_OK, UsageError
from ._options import _load_config, _parse_proxy_option
from ._parser import _Formatter, common_options
from ._session import ChatSession
from ._term import _isatty

_CHAT_EPILOG = """\
examples:
  polychat chat "What is the capital of France?"
  polychat chat --model fast --system "Answer in one word." "Capital of Peru?"
  polychat chat --provider work --model gpt-4o-mini "hello"
  cat notes.txt | polychat chat "Summarise:" -
  echo "hello" | polychat chat                    (no prompt and piped input: the input is the prompt)
  polychat chat --json "hi" | jq -r '.choices[0].delta.content // empty'
  polychat chat --proxy socks5://user:pass@127.0.0.1:1080 "hi"

The answer goes to stdout as it arrives; which provider and model answered is shown on stderr.
Without a prompt on a terminal, chat is interactive and keeps the conversation:
  /reset  forget the conversation    /model NAME  switch model    /provider NAME  switch provider
  /system TEXT  set the system prompt    /help    /exit (or Ctrl-D)
Ctrl-C stops the current answer and returns to the prompt.

--model takes a model name, a route alias from the config, "provider:model", or a provider name (its default
model). Without --model: [defaults] model from the config, else the provider's default model.
"""


def register_chat(sub: Any) -> None:
    p = sub.add_parser(
        "chat",
        help="ask a question (or talk interactively)",
        description="Ask a model something; the answer streams to stdout.",
        epilog=_CHAT_EPILOG,
        formatter_class=_Formatter,
        parents=[common_options()],
    )
    p.add_argument(
        "prompt",
        nargs="*",
        metavar="PROMPT",
        help='the question (words are joined with spaces); "-" reads standard input',
    )
    g = p.add_argument_group("model and provider")
    g.add_argument("-m", "--model", help="model, route alias, or provider:model (default: from the config)")
    g.add_argument("-p", "--provider", metavar="NAME", help="a provider or route from the config, 'local' or 'openai'")
    g.add_argument("-s", "--system", metavar="TEXT", help="system prompt")
    g.add_argument("-t", "--temperature", type=float, metavar="T", help="sampling temperature, 0 to 2")
    g.add_argument("--max-tokens", type=int, metavar="N", help="stop after N tokens")
    g = p.add_argument_group("network")
    g.add_argument("--proxy", metavar="URL", help="proxy for this request (http, https, socks5, socks5h URL)")
    g.add_argument("--no-proxy", action="store_true", help="connect directly, ignoring configured and env proxies")
    g.add_argument("--timeout", type=float, metavar="SECONDS", help="read/write timeout of the request")
    g = p.add_argument_group("output")
    g.add_argument("--no-stream", action="store_true", help="wait for the whole answer instead of streaming it")
    g.add_argument(
        "--json",
        action="store_true",
        help="print each chunk as a JSON line (with --no-stream: the completion as one JSON line)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no status line and no provider line on stderr")
    p.set_defaults(handler=cmd_chat)


def _read_prompt(args: argparse.Namespace) -> str | None:
    """The prompt from the arguments and/or stdin; None means "interactive"."""
    words: list[str] = list(args.prompt)
    if not words:
        if _isatty(sys.stdin):
            return None
        words = ["-"]
    piped = sys.stdin.read().strip("\n") if "-" in words else ""
    prompt = ""
    previous = ""
    for word in words:
        if prompt:
            # Piped text is set off by a blank line; words from the command line are joined with spaces.
            prompt += "\n\n" if "-" in (word, previous) else " "
        prompt += piped if word == "-" else word
        previous = word
    prompt = prompt.strip()
    if not prompt:
        raise UsageError("the prompt is empty (give it as an argument, or pipe it in)")
    return prompt


def cmd_chat(args: argparse.Namespace) -> int:
    config = _load_config(args)
    proxy = _parse_proxy_option(args)
    if args.proxy is not None and args.no_proxy:
        raise UsageError("--proxy and --no-proxy contradict each other; pass one")
    prompt = _read_prompt(args)
    session = ChatSession(config, args, proxy)
    try:
        if prompt is None:
            return session.interactive()
        session.messages.append({"role": "user", "content": prompt})
        session.ask()
        return EXIT_OK
    finally:
        session.close()
