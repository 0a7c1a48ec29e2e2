"""Exit codes, the usage error, and how an exception becomes an exit code and a one-line message.

Kept apart so every command (and ``polychat serve``) reports failures the same way.
"""

from __future__ import annotations

from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


class CommandTimeout(Exception):
    """``--timeout`` passed before the whole answer arrived (exit code 1, like any failed call)."""


def _deadline_passed(e: BaseException) -> bool:
    """Did the call's overall deadline (``--timeout``) end it, before or during the answer?"""
    from ..errors import APITimeoutError

    def passed(err: BaseException) -> bool:
        cause = getattr(err, "cause", None)
        if cause is not None and cause is not err and passed(cause):
            return True
        return isinstance(err, APITimeoutError) and "deadline" in str(err)

    return _every_attempt(e, passed)


def _every_attempt(e: BaseException, test: Callable[[BaseException], bool]) -> bool:
    """``test`` holds for ``e`` or, for a failed chain, for the error of each of its attempts."""
    if test(e):
        return True
    errors = [a.error for a in getattr(e, "attempts", None) or ()]
    return bool(errors) and all(err is not None and err is not e and test(err) for err in errors)


def _is_context_error(e: BaseException) -> bool:
    return getattr(e, "code", None) == "context_length_exceeded"


def _is_model_error(e: BaseException) -> bool:
    from ..errors import NotFoundError

    return isinstance(e, NotFoundError) and (getattr(e, "param", None) == "model" or e.code == "model_not_found")


def _context_exceeded(e: BaseException) -> bool:
    """Did the prompt not fit the model's context window?"""
    return _every_attempt(e, _is_context_error)


def _unknown_model(e: BaseException) -> bool:
    """Was the model unknown to every provider that was asked?"""
    return _every_attempt(e, _is_model_error)


def _first_sentence(text: str) -> str:
    text = text.strip()
    cut = text.find(". ")
    return text[: cut + 1] if cut > 0 else text


def _describe_error(e: BaseException) -> tuple[int, str]:
    """``(exit code, one line)`` in the command's words: options, not Python arguments."""
    from ..errors import APIError, AuthenticationError, ConfigError, InvalidRequestError, PermissionDeniedError

    if _context_exceeded(e):
        return EXIT_USAGE, (
            f"{_first_sentence(getattr(e, 'message', str(e)))} Shorten the prompt (or, in a chat session, /reset), "
            "or lower --max-tokens"
        )
    if _unknown_model(e):
        provider = getattr(e, "provider", None)
        where = f" by {provider}" if provider else ""
        return EXIT_USAGE, (
            f"the model is not served{where}: {_first_sentence(getattr(e, 'message', str(e)))} "
            "See `polychat providers` for what is configured, or leave out --model for the default"
        )
    if isinstance(e, (AuthenticationError, PermissionDeniedError)):
        what = "rejected the API key" if isinstance(e, AuthenticationError) else "refused the request (permission)"
        return EXIT_FAILURE, (
            f"{e.provider or 'the provider'} {what} ({e.status_code}): {_first_sentence(e.message)} "
            "Check the key (see `polychat providers`)"
        )
    if isinstance(e, CommandTimeout):
        return EXIT_FAILURE, str(e)
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
