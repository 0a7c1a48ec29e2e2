"""One chat conversation: the resolved provider and model, printing an answer (streamed or whole) with its
footer, and the interactive loop with its /commands and Ctrl-C handling.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from ._errors import (
    EXIT_OK,
    CommandTimeout,
    UsageError,
    _context_exceeded,
    _deadline_passed,
    _describe_error,
    _unknown_model,
)
from ._term import _dim, _error, _Held, _held_warnings, _isatty, _status

if TYPE_CHECKING:
    from ..client import Client
    from ..config import Config
    from ..providers.base import Provider


class ChatSession:
    """One conversation: the resolved provider and model, the messages so far, and the output rules."""

    def __init__(self, config: Config, args: argparse.Namespace, proxy: Any) -> None:
        from ..client import Client

        self.config = config
        self.args = args
        self.proxy = proxy
        self.model_arg: str | None = args.model
        self.provider_arg: str | None = args.provider
        self.system: str | None = args.system
        self.messages: list[dict[str, Any]] = []
        self.reset()
        self.client: Client = Client(**config.client_kwargs())
        self.provider: Provider
        self.model: str
        self.resolve()

    def close(self) -> None:
        self.client.close()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def resolve(self) -> None:
        """Pick the provider and model from --provider / --model and the config (default chain: Local last)."""
        if self.provider_arg is not None and self.provider_arg in self.config.routes and self.model_arg is not None:
            raise UsageError(
                f"{self.provider_arg!r} is a route: it picks the model of each provider itself; drop --model "
                f"(or use --model {self.provider_arg})"
            )
        provider, model = self.config.resolve(self.model_arg, self.provider_arg)
        if provider is None:
            provider = self.config.default_chain()
        self.provider, self.model = provider, model

    def label(self) -> str:
        names = [m.name for m in self.provider.members()]
        return " → ".join(dict.fromkeys(names))

    def _waiting_text(self) -> str:
        first = self.provider.members()[0]
        if hasattr(first, "loaded"):
            # An in-process model: loading takes a fraction of a second, reading the prompt is the wait.
            return f"reading the prompt ({first.name})…"
        return f"waiting for {first.name}…"

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"provider": self.provider}
        if self.args.temperature is not None:
            params["temperature"] = self.args.temperature
        if self.args.max_tokens is not None:
            params["max_tokens"] = self.args.max_tokens
        if self.proxy is not None:
            params["proxy"] = self.proxy
        if self.args.timeout is not None:
            # The whole answer, retries, failover and the embedded model included — not just one read.
            params["deadline"] = self.args.timeout
        return params

    def ask(self) -> str:
        """Send the conversation, print the answer, return its text (also appended by the caller)."""
        t0 = time.monotonic()
        _status.show(self._waiting_text())
        reply = _Reply(sys.stdout, bool(self.args.json), self.model or self.provider.default_model or "")
        held = _held_warnings(bool(self.args.debug))
        try:
            if self.args.no_stream:
                self._receive_whole(reply, held)
            else:
                self._receive_stream(reply, held)
        except BaseException as e:
            held.drop()
            explained = self._explain(e, reply) if isinstance(e, Exception) else None
            if explained is not None:
                raise explained from e
            raise
        finally:
            held.show()  # an answer with no chunks: its warnings were not shown yet
            _status.clear()
            reply.end_line()
        if not self.args.quiet:
            reply.footer(time.monotonic() - t0)
        return reply.text()

    def _receive_whole(self, reply: _Reply, held: _Held) -> None:
        """``--no-stream``: one request, one printed answer."""
        completion = self.client.chat.completions.create(
            model=self.model, messages=self.messages, stream=False, **self._params()
        )
        _status.clear()
        held.show()
        reply.answered_by, reply.model = completion.provider, completion.model or reply.model
        reply.finish = completion.choices[0].finish_reason if completion.choices else None
        reply.show(completion.content, completion.model_dump_json)

    def _receive_stream(self, reply: _Reply, held: _Held) -> None:
        """Print each chunk as it arrives (choice 0 only), keeping who answered and why it stopped."""
        stream = self.client.chat.completions.create(
            model=self.model, messages=self.messages, stream=True, **self._params()
        )
        with stream:
            _status.clear()
            held.show()
            for chunk in stream:
                reply.answered_by = chunk.provider or reply.answered_by
                reply.model = chunk.model or reply.model
                reply.finish = next((c.finish_reason for c in chunk.choices if c.finish_reason), reply.finish)
                piece = "".join(c.delta.content or "" for c in chunk.choices if c.index == 0)
                reply.show(piece, chunk.model_dump_json)

    def _explain(self, e: Exception, reply: _Reply) -> Exception | None:
        """The CLI's own error for a failure a user can act on (a model nobody serves, ``--timeout`` passed), or
        None to let the failure through as it is."""
        if _unknown_model(e):
            members = self.provider.members()
            local = [m for m in members if hasattr(m, "loaded")]
            only = f"; the embedded model serves only {local[0].default_model!r}" if local else ""
            return UsageError(
                f"no configured provider serves the model {reply.model!r} ({', '.join(m.name for m in members)} "
                f"refused it{only}). See `polychat providers` for what is set up (a key such as OPENAI_API_KEY "
                "adds a provider), or leave out --model"
            )
        if self.args.timeout is not None and _deadline_passed(e):
            got = reply.text()
            so_far = f"; {len(got)} characters had arrived" if got else ""
            who = reply.answered_by or getattr(e, "provider", None) or self.label()
            return CommandTimeout(f"no complete answer within --timeout {self.args.timeout:g}s (from {who}{so_far})")
        return None

    # -- interactive ---------------------------------------------------------------------------------------------

    def interactive(self) -> int:
        _line_editing()
        err = sys.stderr
        err.write(_dim(f"polychat · {self._describe_target()}", err) + "\n")
        err.write(_dim("Type a message; /help lists commands; Ctrl-D leaves.", err) + "\n")
        err.flush()
        while True:
            try:
                line = _read_message("> ")
            except EOFError:
                err.write("\n")
                return EXIT_OK
            except KeyboardInterrupt:
                err.write("\n")
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return EXIT_OK
                continue
            self.messages.append({"role": "user", "content": line})
            try:
                answer = self._ask_fitting()
            except KeyboardInterrupt:
                self.messages.pop()
                err.write(_dim("[interrupted]", err) + "\n")
                continue
            except Exception as e:
                self.messages.pop()
                if self.args.debug:
                    import traceback

                    traceback.print_exc()
                _error(_describe_error(e)[1])
                continue
            self.messages.append({"role": "assistant", "content": answer})

    def _ask_fitting(self) -> str:
        """:meth:`ask`; when the conversation no longer fits the model's context, drop the oldest turns (the
        system prompt stays) and say so, rather than failing every message until ``/reset``."""
        while True:
            try:
                return self.ask()
            except Exception as e:
                if not _context_exceeded(e) or not self._drop_oldest_turn():
                    raise
                sys.stderr.write(
                    _dim("(the conversation no longer fits the model's context: dropped the oldest turn)", sys.stderr)
                    + "\n"
                )

    def _drop_oldest_turn(self) -> bool:
        """Remove the oldest user message and the answers after it (never the last message); False if none."""
        start = 1 if self.messages and self.messages[0]["role"] == "system" else 0
        users = [i for i, m in enumerate(self.messages) if m["role"] == "user" and i >= start]
        if len(users) < 2:
            return False
        del self.messages[users[0] : users[1]]
        return True

    def _describe_target(self) -> str:
        text = f"{self.label()} · model {self.model or self.provider.default_model or '(provider default)'}"
        name = self.provider_arg or (self.config.default_provider if self.model_arg is None else None)
        if name is not None and name in self.config.names():
            reason = self.config.unavailable(name)
            if reason:
                text += f" (not configured: {reason})"
        return text

    def command(self, line: str) -> bool:
        """Run one /command; False means leave."""
        name, _, arg = line[1:].partition(" ")
        name, arg = name.strip().lower(), arg.strip()
        err = sys.stderr

        def say(text: str) -> None:
            err.write(_dim(text, err) + "\n")
            err.flush()

        if name in ("exit", "quit", "q"):
            return False
        if name in ("help", "h", "?"):
            say(
                "/reset           forget the conversation\n"
                "/model [NAME]    show or switch the model (a name, route alias, or provider:model)\n"
                "/provider [NAME] show or switch the provider ('default': back to the config's choice)\n"
                "/system [TEXT]   set (or clear) the system prompt; also resets the conversation\n"
                "/exit            leave (or Ctrl-D); Ctrl-C stops an answer"
            )
        elif name == "reset":
            self.reset()
            say("conversation cleared")
        elif name in ("model", "provider"):
            if arg:
                old = (self.model_arg, self.provider_arg)
                value = None if arg == "default" else arg
                if name == "model":
                    self.model_arg = value
                else:
                    self.provider_arg = value
                try:
                    self.resolve()
                except Exception as e:
                    self.model_arg, self.provider_arg = old
                    _error(_describe_error(e)[1])
                    return True
            say(self._describe_target())
        elif name == "system":
            self.system = arg or None
            self.reset()
            say("system prompt set; conversation cleared" if arg else "system prompt cleared; conversation cleared")
        else:
            say(f"unknown command /{name}; /help lists them")
        return True


class _Reply:
    """What has arrived of one answer: printed as it comes, and kept for the footer, a timeout's message and
    the conversation."""

    def __init__(self, out: TextIO, json: bool, model: str) -> None:
        self.out = out
        self.json = json  # one JSON object a line (the completion or each chunk) instead of the text
        self.model = model
        self.answered_by: str | None = None
        self.finish: str | None = None
        self.parts: list[str] = []
        self.open_line = False  # the printed text does not end with a newline yet

    def show(self, piece: str, as_json: Callable[[], str]) -> None:
        self.parts.append(piece)
        if self.json:
            self.out.write(as_json() + "\n")
        elif piece:
            self.out.write(piece)
            self.open_line = not piece.endswith("\n")
        self.out.flush()

    def text(self) -> str:
        return "".join(self.parts)

    def end_line(self) -> None:
        """Leave the terminal on a fresh line, so the footer (or the shell's prompt) does not trail the answer."""
        if self.open_line:
            self.out.write("\n")
            self.out.flush()

    def footer(self, seconds: float) -> None:
        """``[provider · model · 1.2s]`` on stderr, plus the finish reason when it was not a normal stop."""
        sep = " · "
        footer = f"{self.answered_by or '?'}{sep}{self.model or 'default model'}{sep}{seconds:.1f}s"
        if self.finish not in (None, "stop"):
            footer += f"{sep}finish_reason={self.finish}"  # e.g. "length": cut at --max-tokens
        footer = f"[{footer}]"
        sys.stderr.write(_dim(footer, sys.stderr) + "\n")
        sys.stderr.flush()


_PASTE_START, _PASTE_END = "\x1b[200~", "\x1b[201~"


def _line_editing() -> None:
    """readline for ``input()`` (editing, history), with bracketed paste on: a pasted block of several lines
    arrives as one message instead of one message per line. (CPython turns it off by default, bpo-42819.)"""
    try:
        import readline
    except ImportError:  # no readline: _read_message joins the terminal's paste markers itself
        if _isatty(sys.stdin) and _isatty(sys.stdout):
            sys.stdout.write("\x1b[?2004h")
            sys.stdout.flush()
        return
    readline.parse_and_bind("set enable-bracketed-paste on")


def _read_message(prompt: str) -> str:
    """One message from the terminal: a line, or a whole bracketed paste (its newlines kept)."""
    line = input(prompt)
    if _PASTE_START not in line:
        return line
    parts = [line]
    while _PASTE_END not in parts[-1]:
        try:
            parts.append(input())
        except EOFError:
            break
    return "\n".join(parts).replace(_PASTE_START, "").replace(_PASTE_END, "")
