"""Exit codes, the usage error, and how an exception becomes an exit code and a one-line message.

Kept apart so every command (and ``polychat serve``) reports failures the same way.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


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
