"""The argument parser: the :data:`COMMANDS` registry, the options every subcommand shares, the help layout.

Building the parser imports each registered module, so this module and those must stay cheap.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any, NoReturn

#: Subcommands in ``--help`` order: "module:function" registrars (see the module docstring).
COMMANDS = [
    "polychat.cli:register_chat",
    "polychat.cli:register_providers",
    "polychat.cli:register_config",
    "polychat.server.cli:register",
    "polychat.cli._keys:register_keys",
]

Handler = Callable[[argparse.Namespace], int]


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


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the rest of the command's: one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        import sys

        sys.stderr.write(f"polychat: error: {message} (see: {self.prog} --help)\n")
        sys.exit(2)


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def common_options(*, top: bool = False) -> argparse.ArgumentParser:
    """Options every subcommand takes (use as ``parents=[common_options()]``). They work before the command too
    (``polychat --config x.toml chat hi``): the top-level parser has them with real defaults (``top=True``), and a
    subcommand's copies default to "not given", so they never overwrite a value given before the command."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("general options")
    g.add_argument(
        "--config",
        metavar="PATH",
        default=None if top else argparse.SUPPRESS,
        help="config file (default: $POLYCHAT_CONFIG, else ~/.config/polychat/config.toml)",
    )
    g.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="log everything at DEBUG level and show tracebacks on errors",
    )
    return p


def add_command(
    sub: Any, name: str, *, help: str, description: str, handler: Handler | None = None, epilog: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand (or an action of one) laid out like every other. With a ``handler`` it takes the common options
    and runs it; without, it is a group whose actions come from :func:`add_actions`."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=_Formatter,
        parents=[common_options()] if handler is not None else [],
    )
    if handler is not None:
        p.set_defaults(handler=handler)
    return p


def add_actions(group: argparse.ArgumentParser) -> Any:
    """The required ACTION of a command group (``polychat config show``, ``polychat keys usage``)."""
    return group.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)


_MAIN_EPILOG = """\
examples:
  polychat chat "What is the capital of France?"     ask once; the answer streams to stdout
  polychat chat                                      talk interactively (/help inside)
  git diff | polychat chat "Review this diff:"       piped text follows the prompt ("-" alone: only it)
  polychat chat --model fast "hi"                    a model alias (route) from the config file
  polychat providers --check                         what is configured, and does it answer?
  polychat config show                               the effective settings and where each comes from
  polychat --config work.toml chat "hi"              general options go before or after the command

With nothing configured, polychat uses the providers whose keys are set (OPENAI_API_KEY, ANTHROPIC_API_KEY,
GEMINI_API_KEY, ...; see: polychat providers), failing over between them, and the embedded SmolLM2 model
(offline, no key) when none is. It never answers from a different model than the one asked for unless the
config says so (a route, or [defaults] fallback).
"""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="polychat",
        description="One chat command over many model providers, with failover.",
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
        parents=[common_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"polychat {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for target in COMMANDS:
        module_name, _, func_name = target.partition(":")
        register = getattr(importlib.import_module(module_name), func_name)
        register(sub)
    return parser
