"""The ``polychat`` command: chat from the shell, list and check providers, show the config.

Output contract: stdout carries only what was asked for (the answer text, JSON lines, a table); everything about
the process — the waiting line, which provider answered, warnings, errors — goes to stderr. Exit codes: 0 ok,
1 a provider failed, 2 a usage or config error, 130 interrupted (Ctrl-C). Tracebacks only with ``--debug``;
secrets (API keys, proxy passwords) never appear in any output.

Adding a subcommand: write ``register(subparsers)`` that adds its parser with ``add_command(subparsers, NAME,
help=..., description=..., handler=...)`` (the handler: a function ``(args) -> exit code``; the parser gets the
common options and the shared layout), and list it in :data:`COMMANDS`. Its module is imported to
build the parser, so it must be cheap; import heavy things inside the handler. (``polychat serve`` will be the
line ``"polychat.server.cli:register"``.)

Pieces, their public names re-exported here: :mod:`._parser` — the parser, :data:`COMMANDS`,
:func:`common_options`, :func:`add_command` and :func:`add_actions`; :mod:`._chat` — ``polychat chat``, with
:mod:`._session` — one conversation, printed and interactive; :mod:`._providers` — ``polychat providers``;
:mod:`._config_cmd` — ``polychat config``; :mod:`._options` — ``--config`` and ``--proxy`` turned into a config
and a proxy; :mod:`._term` — status line, colours, log and error lines, secret scrubbing; :mod:`._errors` — exit
codes and error messages.
"""

from __future__ import annotations

import contextlib
import os
import sys

from ._chat import cmd_chat as cmd_chat
from ._chat import register_chat as register_chat
from ._config_cmd import cmd_config_path as cmd_config_path
from ._config_cmd import cmd_config_show as cmd_config_show
from ._config_cmd import register_config as register_config
from ._config_cmd import to_toml as to_toml
from ._errors import EXIT_FAILURE as EXIT_FAILURE
from ._errors import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from ._errors import EXIT_OK as EXIT_OK
from ._errors import EXIT_USAGE as EXIT_USAGE
from ._errors import UsageError as UsageError
from ._errors import _describe_error
from ._options import _load_config as _load_config
from ._parser import COMMANDS as COMMANDS
from ._parser import Handler as Handler
from ._parser import _Formatter as _Formatter
from ._parser import add_actions as add_actions
from ._parser import add_command as add_command
from ._parser import build_parser as build_parser
from ._parser import common_options as common_options
from ._providers import cmd_providers as cmd_providers
from ._providers import register_providers as register_providers
from ._session import ChatSession as ChatSession
from ._term import _error, _isatty, _setup_logging, _status


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
