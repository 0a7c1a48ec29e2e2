"""The ``polychat`` command: chat from the shell, list and check providers, show the config.

Output contract: stdout carries only what was asked for (the answer text, JSON lines, a table); everything about
the process — the waiting line, which provider answered, warnings, errors — goes to stderr. Exit codes: 0 ok,
1 a provider failed, 2 a usage or config error, 130 interrupted (Ctrl-C). Tracebacks only with ``--debug``;
secrets (API keys, proxy passwords) never appear in any output.

Adding a subcommand: write ``register(subparsers)`` that adds a parser (with ``parents=[common_options()]``) and
sets ``handler=`` to a function ``(args) -> exit code``, and list it in :data:`COMMANDS`. Its module is imported to
build the parser, so it must be cheap; import heavy things inside the handler. (``polychat serve`` will be the
line ``"polychat.server.cli:register"``.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ..client import Client, Stream
    from ..config import Config
    from ..providers.base import Provider
    from ..types import ChatCompletion, ChatCompletionChunk

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Subcommands in ``--help`` order: "module:function" registrars (see the module docstring).
COMMANDS = [
    "polychat.cli:register_chat",
    "polychat.cli:register_providers",
    "polychat.cli:register_config",
    "polychat.server.cli:register",
]

Handler = Callable[[argparse.Namespace], int]

_log = logging.getLogger("polychat")

# Secrets seen so far (config keys, proxy passwords); scrubbed from every message we print.
_secrets: list[str] = []


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


# -- terminal helpers ---------------------------------------------------------------------------------------------


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _color(stream: IO[str]) -> bool:
    return _isatty(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _dim(text: str, stream: IO[str]) -> str:
    return f"\033[2m{text}\033[0m" if _color(stream) else text


def _scrub(text: str) -> str:
    from .._redact import redact_text

    return redact_text(text, _secrets)


class _Status:
    """A transient line on stderr while waiting (a spinner and the seconds so far); only on a terminal."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self) -> None:
        self.enabled = False
        self._text = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False
        self._t0 = 0.0

    def show(self, text: str) -> None:
        self.clear()
        if not self.enabled:
            return
        self._text = text
        self._t0 = time.monotonic()
        self._stop.clear()
        self._draw(0)
        self._thread = threading.Thread(target=self._tick, name="polychat-status", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):  # animation pace, not synchronisation
            frame += 1
            self._draw(frame)

    def _draw(self, frame: int) -> None:
        with self._lock:
            if self._stop.is_set() and frame:
                return
            elapsed = time.monotonic() - self._t0
            spin = self.FRAMES[frame % len(self.FRAMES)]
            secs = f" {elapsed:.0f}s" if elapsed >= 2 else ""
            sys.stderr.write(f"\r\033[2m{spin} {self._text}{secs}\033[0m\033[K")
            sys.stderr.flush()
            self._shown = True

    def clear(self) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join()
        with self._lock:
            if self._shown:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
                self._shown = False


_status = _Status()


class _StderrHandler(logging.Handler):
    """Log records on stderr, one line each, after clearing the status line; secrets scrubbed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = _scrub(self.format(record))
            _status.clear()
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging(debug: bool) -> None:
    handler = _StderrHandler()
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(logging.Formatter("%(message)s"))
        _log.handlers[:] = [handler]
        _log.setLevel(logging.WARNING)
        _log.propagate = False


def _error(message: str) -> None:
    _status.clear()
    sys.stderr.write(f"polychat: error: {_scrub(message)}\n")
    sys.stderr.flush()


# -- the parser ---------------------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, _terminal_width()))

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        # argparse sizes the name column without the (further indented) subcommand names: count them too.
        if isinstance(action, argparse._SubParsersAction):
            for sub in action._get_subactions():
                length = len(self._format_action_invocation(sub)) + self._current_indent + 2 * self._indent_increment
                self._action_max_length = max(self._action_max_length, length)


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes (use as ``parents=[common_options()]``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("general options")
    g.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $POLYCHAT_CONFIG, else ~/.config/polychat/config.toml)",
    )
    g.add_argument("--debug", action="store_true", help="log everything at DEBUG level and show tracebacks on errors")
    return p


_MAIN_EPILOG = """\
examples:
  polychat chat "What is the capital of France?"     ask once; the answer streams to stdout
  polychat chat                                      talk interactively (/help inside)
  git diff | polychat chat "Review this diff:" -     "-" stands for the text piped in
  polychat chat --model fast "hi"                    a model alias (route) from the config file
  polychat providers --check                         what is configured, and does it answer?
  polychat config show                               the effective config, secrets hidden

With nothing configured, polychat uses OpenAI when OPENAI_API_KEY or OPENAI_BASE_URL is set, and the
embedded SmolLM2 model (offline, no key) otherwise or when that fails.
"""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="polychat",
        description="One chat command over many model providers, with failover.",
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"polychat {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for target in COMMANDS:
        module_name, _, func_name = target.partition(":")
        register = getattr(importlib.import_module(module_name), func_name)
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``polychat`` console script and ``python -m polychat``; returns the exit code."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(Exception):
                reconfigure(errors="replace")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_OK
    debug = bool(getattr(args, "debug", False))
    _setup_logging(debug)
    _status.enabled = _isatty(sys.stderr) and not getattr(args, "quiet", False)
    try:
        return handler(args)
    except KeyboardInterrupt:
        _status.clear()
        sys.stderr.write("\n" if _isatty(sys.stderr) else "polychat: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as e:
        if debug:
            import traceback

            _status.clear()
            traceback.print_exc()
        code, message = _describe_error(e)
        _error(message)
        return code
    finally:
        _status.clear()


def _describe_error(e: BaseException) -> tuple[int, str]:
    from ..errors import APIError, ConfigError, InvalidRequestError

    if isinstance(e, UsageError):
        return EXIT_USAGE, str(e)
    if isinstance(e, ConfigError):
        return EXIT_USAGE, str(e)
    if isinstance(e, InvalidRequestError):
        msg = str(e)
        if e.param == "model" and "empty" in msg:
            msg = (
                "no model given: name one (--model NAME, or /model NAME in a chat session), or set "
                "[defaults] model (or a provider's default_model) in the config"
            )
        return EXIT_USAGE, msg
    if isinstance(e, APIError):
        return EXIT_FAILURE, str(e)
    if isinstance(e, ImportError):
        return EXIT_FAILURE, f"a component is not installed: {e}"
    return EXIT_FAILURE, f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)"


def _load_config(args: argparse.Namespace) -> Config:
    from ..config import load_config

    config = load_config(getattr(args, "config", None))
    _secrets.extend(config.secrets())
    _secrets.extend(_env_proxy_passwords())
    return config


def _env_proxy_passwords() -> list[str]:
    from urllib.parse import unquote, urlsplit

    out: list[str] = []
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        with contextlib.suppress(ValueError):
            password = urlsplit(os.environ.get(var, "")).password
            if password:
                out += [password, unquote(password)]
    return out


def _parse_proxy_option(args: argparse.Namespace) -> Any:
    """``--proxy URL`` / ``--no-proxy`` as a per-call proxy (it wins over the config's), or None."""
    from .._proxy import parse_proxy
    from ..config import proxy_passwords

    if getattr(args, "no_proxy", False):
        return False
    if getattr(args, "proxy", None) is None:
        return None
    proxy = parse_proxy(args.proxy, "--proxy")
    _secrets.extend(proxy_passwords(proxy))
    return proxy


# -- polychat chat ------------------------------------------------------------------------------------------------

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
            from ..providers.defaults import default_chain

            provider = default_chain()
        self.provider, self.model = provider, model

    def label(self) -> str:
        names = [m.name for m in self.provider.members()]
        return " → ".join(dict.fromkeys(names))

    def _waiting_text(self) -> str:
        first = self.provider.members()[0]
        if getattr(first, "loaded", None) is False:
            return f"loading the model ({first.name})…"
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
            params["timeout"] = self.args.timeout
        return params

    def ask(self) -> str:
        """Send the conversation, print the answer, return its text (also appended by the caller)."""
        out = sys.stdout
        quiet = self.args.quiet
        t0 = time.monotonic()
        _status.show(self._waiting_text())
        text_parts: list[str] = []
        answered_by: str | None = None
        model = self.model or self.provider.default_model or ""
        finish: str | None = None
        open_line = False
        try:
            if self.args.no_stream:
                completion = cast(
                    "ChatCompletion",
                    self.client.chat.completions.create(
                        model=self.model, messages=self.messages, stream=False, **self._params()
                    ),
                )
                _status.clear()
                answered_by, model = completion.provider, completion.model or model
                finish = completion.choices[0].finish_reason if completion.choices else None
                text_parts.append(completion.content)
                if self.args.json:
                    out.write(completion.model_dump_json() + "\n")
                elif completion.content:
                    out.write(completion.content)
                    open_line = not completion.content.endswith("\n")
                out.flush()
            else:
                stream = cast(
                    "Stream[ChatCompletionChunk]",
                    self.client.chat.completions.create(
                        model=self.model, messages=self.messages, stream=True, **self._params()
                    ),
                )
                with stream:
                    _status.clear()
                    for chunk in stream:
                        answered_by = chunk.provider or answered_by
                        model = chunk.model or model
                        piece = "".join(c.delta.content or "" for c in chunk.choices if c.index == 0)
                        finish = next((c.finish_reason for c in chunk.choices if c.finish_reason), finish)
                        text_parts.append(piece)
                        if self.args.json:
                            out.write(chunk.model_dump_json() + "\n")
                        elif piece:
                            out.write(piece)
                            open_line = not piece.endswith("\n")
                        out.flush()
        finally:
            _status.clear()
            if open_line:
                out.write("\n")
                out.flush()
        if not quiet:
            sep = " · "
            footer = f"{answered_by or '?'}{sep}{model or 'default model'}{sep}{time.monotonic() - t0:.1f}s"
            if finish not in (None, "stop"):
                footer += f"{sep}finish_reason={finish}"  # e.g. "length": cut at --max-tokens
            footer = f"[{footer}]"
            sys.stderr.write(_dim(footer, sys.stderr) + "\n")
            sys.stderr.flush()
        return "".join(text_parts)

    # -- interactive ---------------------------------------------------------------------------------------------

    def interactive(self) -> int:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        err = sys.stderr
        err.write(_dim(f"polychat · {self._describe_target()}", err) + "\n")
        err.write(_dim("Type a message; /help lists commands; Ctrl-D leaves.", err) + "\n")
        err.flush()
        while True:
            try:
                line = input("> ")
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
                answer = self.ask()
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


# -- polychat providers -------------------------------------------------------------------------------------------

_PROVIDERS_EPILOG = """\
examples:
  polychat providers                 what is known and configured (sends nothing)
  polychat providers --check         also send each configured provider a one-token request
                                     (exit code 1 when a check fails)
  polychat providers --json          machine-readable

Built in: "openai" (configured by OPENAI_API_KEY / OPENAI_BASE_URL) and "local" (the embedded model, offline).
Others come from [providers.NAME] and [routes.NAME] in the config file (see: polychat config path).
"""


def register_providers(sub: Any) -> None:
    p = sub.add_parser(
        "providers",
        help="list providers and routes; --check probes them",
        description="List every known provider and route: type, whether it is configured, models, capabilities.",
        epilog=_PROVIDERS_EPILOG,
        formatter_class=_Formatter,
        parents=[common_options()],
    )
    p.add_argument("--check", action="store_true", help="send each configured provider a tiny request (1 token)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="timeout per check (default 30)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(handler=cmd_providers)


def _provider_rows(config: Config) -> list[dict[str, Any]]:
    import dataclasses

    from ..errors import ConfigError

    rows: list[dict[str, Any]] = []
    for name, spec in config.specs.items():
        reason = config.unavailable(name)
        caps: list[str] = []
        models = list(spec.models)
        try:
            cls = config.provider_class(name)
        except ConfigError as e:
            reason = reason or str(e)
        else:
            capabilities = cls.capabilities
            caps = [f.name for f in dataclasses.fields(capabilities) if getattr(capabilities, f.name) is True]
            if not models:
                models = list(getattr(cls, "models", ()) or ())
            if not models and reason is None:
                with contextlib.suppress(Exception):  # built, not used: cheap, sends nothing
                    default = config.provider(name).default_model
                    models = [default] if default else []
        rows.append(
            {
                "name": name,
                "type": spec.type,
                "builtin": spec.builtin,
                "configured": reason is None,
                "reason": reason,
                "models": models,
                "default_model": spec.effective_default_model,
                "capabilities": caps,
            }
        )
    for name, route in config.routes.items():
        reason = config.unavailable(name)
        rows.append(
            {
                "name": name,
                "type": "route",
                "builtin": False,
                "configured": reason is None,
                "reason": reason,
                "models": [f"{p}:{m}" if m else p for p, m in route.chain],
                "default_model": None,
                "capabilities": [],
            }
        )
    return rows


def _check_one(config: Config, client: Client, name: str, timeout: float) -> dict[str, Any]:
    from ..errors import APIError, ConfigError, InvalidRequestError

    t0 = time.monotonic()
    try:
        provider, model = config.resolve(None, name)
        assert provider is not None
        if not model and not provider.default_model:
            listed = client.models.list(provider=provider)
            if not listed.data:
                raise InvalidRequestError("no default model, and the server lists none", param="model")
            model = listed.data[0].id
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say OK."}],
            max_tokens=1,
            provider=provider,
            timeout=timeout,
            allow_empty=True,
        )
    except (APIError, ConfigError, InvalidRequestError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return {"ok": False, "seconds": round(time.monotonic() - t0, 3), "error": _scrub(first)}
    return {"ok": True, "seconds": round(time.monotonic() - t0, 3), "error": None}


def cmd_providers(args: argparse.Namespace) -> int:
    config = _load_config(args)
    rows = _provider_rows(config)
    failed = False
    if args.check:
        from ..client import Client

        kwargs = {**config.client_kwargs(), "max_retries": 0}
        if not args.debug:
            _log.setLevel(logging.ERROR)  # failover chatter: each check's outcome is reported below
        with Client(**kwargs) as client:
            for row in rows:
                if not row["configured"]:
                    row["check"] = None
                    continue
                _status.show(f"checking {row['name']}…")
                row["check"] = _check_one(config, client, row["name"], args.timeout)
                _status.clear()
                failed = failed or not row["check"]["ok"]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_FAILURE if failed else EXIT_OK
    color = _color(sys.stdout)

    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if color else text

    table: list[list[tuple[str, str]]] = []
    for row in rows:
        kind = row["type"] + (" (built in)" if row["builtin"] else "")
        status = ("ready", "32") if row["configured"] else (f"not configured: {row['reason']}", "33")
        cells = [(row["name"], ""), (kind, ""), status]
        if args.check:
            check = row.get("check")
            if check is None:
                cells.append(("skipped", "2"))
            elif check["ok"]:
                cells.append((f"ok {check['seconds']:.2f}s", "32"))
            else:
                cells.append((f"FAILED {check['seconds']:.2f}s", "31"))
        models = row["models"]
        sep = " → " if row["type"] == "route" else ", "
        cells.append((sep.join(models) if models else "-", ""))
        cells.append((", ".join(row["capabilities"]) or "-", "2"))
        table.append(cells)
    header = ["NAME", "TYPE", "STATUS", *(["CHECK"] if args.check else []), "MODELS", "CAPABILITIES"]
    widths = [max(len(header[i]), *(len(r[i][0]) for r in table)) for i in range(len(header))]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip() + "\n")
    for cells in table:
        parts = []
        for i, (text, code) in enumerate(cells):
            padded = text if i == len(cells) - 1 else text.ljust(widths[i])
            parts.append(paint(padded, code) if code else padded)
        out.write("  ".join(parts).rstrip() + "\n")
    errors = [(row["name"], row["check"]["error"]) for row in rows if row.get("check") and not row["check"]["ok"]]
    if errors:
        out.write("\nfailed checks:\n")
        for name, message in errors:
            out.write(f"  {name}: {message}\n")
    return EXIT_FAILURE if failed else EXIT_OK


# -- polychat config ----------------------------------------------------------------------------------------------

_CONFIG_EPILOG = """\
examples:
  polychat config path               where the config file is looked up
  polychat config show               the effective config, API keys and proxy passwords hidden
  polychat config show --json

The file is found at --config PATH, else $POLYCHAT_CONFIG, else $XDG_CONFIG_HOME/polychat/config.toml
(~/.config/polychat/config.toml). A minimal one:

  [providers.work]
  type = "openai"                       # any OpenAI-compatible server
  base_url = "http://127.0.0.1:8080/v1"
  api_key_env = "WORK_KEY"              # the NAME of the variable holding the key
  models = ["gpt-4o-mini"]

  [routes.fast]                         # polychat chat --model fast ...
  chain = ["work:gpt-4o-mini", "local"] # try work, fall back to the embedded model

  [defaults]
  model = "fast"
"""


def register_config(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="show the effective config, or where it is read from",
        description="Inspect the polychat config file.",
        epilog=_CONFIG_EPILOG,
        formatter_class=_Formatter,
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)
    show = actions.add_parser(
        "show",
        help="print the effective config (secrets hidden)",
        description="Print the effective config as TOML (or JSON), with API keys and proxy passwords hidden.",
        formatter_class=_Formatter,
        parents=[common_options()],
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(handler=cmd_config_show)
    path = actions.add_parser(
        "path",
        help="print where the config file is looked up",
        description="Print the path of the config file polychat reads (it may not exist yet).",
        formatter_class=_Formatter,
        parents=[common_options()],
    )
    path.set_defaults(handler=cmd_config_path)


def cmd_config_path(args: argparse.Namespace) -> int:
    from ..config import CONFIG_ENV, config_location

    location, how = config_location(args.config)
    sys.stdout.write(f"{location}\n")
    why = {"--config": "from --config", CONFIG_ENV: f"from ${CONFIG_ENV}", "default": "the default location"}[how]
    state = "exists" if location.is_file() else "does not exist: polychat runs with built-in defaults"
    if how != "default" and not location.is_file():
        state = "does not exist: polychat will stop with an error"
    sys.stderr.write(_dim(f"({why}; {state})", sys.stderr) + "\n")
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    from .._redact import redact_url
    from ..config import config_location

    config = _load_config(args)
    data = config.redacted()
    if args.json:
        sys.stdout.write(json.dumps({"path": config.path, **data}, indent=2) + "\n")
        return EXIT_OK
    out: list[str] = []
    if config.path:
        out.append(f"# polychat config: {config.path}")
    else:
        out.append(f"# no config file at {config_location(args.config)[0]}: built-in defaults only")
    builtins = [n for n, s in config.specs.items() if s.builtin]
    if builtins:
        out.append(f"# built-in providers: {', '.join(builtins)} (openai from OPENAI_API_KEY / OPENAI_BASE_URL)")
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        if os.environ.get(var):
            out.append(f"# environment: {var}={redact_url(os.environ[var])}")
    body = to_toml(data)
    sys.stdout.write("\n".join(out) + ("\n\n" + body if body else "\n"))
    return EXIT_OK


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for plain config data (tables, strings, numbers, booleans, lists)."""
    lines: list[str] = []

    def key(k: str) -> str:
        return k if k and all(c.isalnum() or c in "_-" for c in k) else json.dumps(k)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(str(v), ensure_ascii=False)

    def table(path: list[str], t: dict[str, Any]) -> None:
        # Dicts become [sub.tables], except settings whose value is itself a table (proxy): those stay inline.
        scalars = [(k, v) for k, v in t.items() if not isinstance(v, dict) or k in _INLINE_TABLES]
        subtables = [(k, v) for k, v in t.items() if isinstance(v, dict) and k not in _INLINE_TABLES]
        if path and (scalars or not subtables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(key(p) for p in path) + "]")
        for k, v in scalars:
            lines.append(f"{key(k)} = {value(v)}")
        for k, v in subtables:
            table([*path, k], v)

    table([], data)
    return "\n".join(lines) + ("\n" if lines else "")


_INLINE_TABLES = frozenset({"proxy"})
