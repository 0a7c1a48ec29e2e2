"""``polychat chat``: its options and help, reading the prompt (arguments and/or stdin), and running it once
or interactively (the conversation itself is :class:`~polychat.cli._session.ChatSession`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._errors import EXIT_OK, UsageError
from ._options import _load_config, _parse_proxy_option
from ._parser import add_command
from ._session import ChatSession
from ._term import _isatty

#: Where a person is waiting, an answer is capped (a small model can otherwise run to its context limit).
DEFAULT_MAX_TOKENS = 512

_CHAT_EPILOG = """\
examples:
  polychat chat "What is the capital of France?"
  polychat chat --model fast --system "Answer in one word." "Capital of Peru?"
  polychat chat --provider work --model gpt-4o-mini "hello"
  cat notes.txt | polychat chat "Summarise:"      (the prompt, then the piped text)
  echo "hello" | polychat chat -                  ("-" alone, or no prompt: the piped text is the prompt)
  polychat chat --json "hi" | jq -r '.choices[0].delta.content // empty'
  polychat chat --proxy socks5://user:pass@127.0.0.1:1080 "hi"

The answer goes to stdout as it arrives; which provider and model answered is shown on stderr.
Without a prompt on a terminal, chat is interactive and keeps the conversation:
  /reset  forget the conversation    /model NAME  switch model    /provider NAME  switch provider
  /system TEXT  set the system prompt    /help    /exit (or Ctrl-D)
Ctrl-C stops the current answer and returns to the prompt.

--model takes a model name, a route alias from the config, "provider:model", or a provider name (its default
model). Without --model: [defaults] model from the config, else the provider's default model. polychat fails over
between providers, but never answers from a different model than the one asked for unless the config says so
(a route, or [defaults] fallback); a bad key or an unknown model is an error.

Answers stop after %(max_tokens)d tokens unless --max-tokens says otherwise (0 or "none": no limit); --timeout
bounds the whole answer, the embedded model included.
""".replace("%(max_tokens)d", str(DEFAULT_MAX_TOKENS))


def register_chat(sub: Any) -> None:
    p = add_command(
        sub,
        "chat",
        help="ask a question (or talk interactively)",
        description="Ask a model something; the answer streams to stdout.",
        epilog=_CHAT_EPILOG,
        handler=cmd_chat,
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
    g.add_argument(
        "--max-tokens",
        type=_max_tokens,
        default=DEFAULT_MAX_TOKENS,
        metavar="N",
        help=f"stop the answer after N tokens (default {DEFAULT_MAX_TOKENS}; 0 or 'none': no limit)",
    )
    g = p.add_argument_group("network")
    g.add_argument("--proxy", metavar="URL", help="proxy for this request (http, https, socks5, socks5h URL)")
    g.add_argument("--no-proxy", action="store_true", help="connect directly, ignoring configured and env proxies")
    g.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up when the whole answer has not arrived within SECONDS (failover and the embedded model included)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--no-stream", action="store_true", help="wait for the whole answer instead of streaming it")
    g.add_argument(
        "--json",
        action="store_true",
        help="print each chunk as a JSON line (with --no-stream: the completion as one JSON line)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no status line and no provider line on stderr")


def _max_tokens(text: str) -> int | None:
    """``--max-tokens``: a whole number; ``0`` or ``none`` lifts the cap (None)."""
    if text.strip().lower() in ("0", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of tokens, or 0 / 'none' for no limit, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more, got {value}")
    return value


def _seconds(text: str) -> float:
    """``--timeout``: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def _stdin_is_piped() -> bool:
    """Is text piped or redirected in? A terminal, /dev/null or a closed stdin is not."""
    import os
    import stat

    if sys.stdin is None or _isatty(sys.stdin):
        return False
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def _read_prompt(args: argparse.Namespace) -> str | None:
    """The prompt from the arguments and/or stdin; None means "interactive".

    Like ``llm``: piped text is used even without ``-`` — after the words of the prompt, set off by a blank line
    (``git diff | polychat chat "Review this:"``); ``-`` places it explicitly, and ``-`` alone (or no prompt) makes
    it the whole prompt."""
    words: list[str] = list(args.prompt)
    piped_in = _stdin_is_piped()
    if not words:
        if _isatty(sys.stdin):
            return None
        words = ["-"]
    elif "-" not in words and piped_in:
        words.append("-")
    piped = sys.stdin.read().strip("\n") if "-" in words else ""
    if not piped.strip():
        words = [w for w in words if w != "-"] or ["-"]
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
