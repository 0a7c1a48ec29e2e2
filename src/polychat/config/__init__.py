"""The polychat config file (TOML): named providers, model aliases routed over provider chains, and defaults.

Where it is read from, first match wins:

1. ``--config PATH`` (``load_config(path)``) — must exist;
2. the ``POLYCHAT_CONFIG`` environment variable — must exist;
3. ``$XDG_CONFIG_HOME/polychat/config.toml`` (default ``~/.config/polychat/config.toml``) — a missing file here
   simply means an empty config.

The whole format::

    [defaults]
    model = "fast"              # model (or route alias) used when none is given
    provider = "work"           # provider (or route) for models that no route or provider claims
    timeout = 60                # seconds; read/write budget of a request
    proxy = "socks5://127.0.0.1:1080"   # client-wide proxy: a URL, a table {http, https, all, no_proxy}, or false
    max_retries = 2             # retries of a single provider (routes have their own)
    first_token_timeout = 20    # failover settings for every call (see "Failover settings" below)

    [providers.work]            # a named provider; the name is what answers and errors show
    type = "openai"             # "openai": any OpenAI-compatible server; "local": the embedded model
    base_url = "http://127.0.0.1:8080/v1"
    api_key_env = "WORK_KEY"    # the NAME of the environment variable holding the key, never the key itself
    proxy = "http://user:pass@127.0.0.1:3128"   # this provider's proxy (wins over [defaults] proxy); false: direct
    timeout = 30
    models = ["gpt-4o-mini"]    # models this provider serves (requests for them go here)
    default_model = "gpt-4o-mini"   # used when no model is given; default: the first of ``models``

    [providers.big]             # another local model (keys of type "local": model_path, model_id, n_ctx,
    type = "local"              # n_threads; without model_path: the embedded SmolLM2)
    model_path = "~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf"

    [routes.fast]               # a model alias: ``model="fast"`` tries this chain, with failover
    chain = ["work:gpt-4o-mini", "local"]   # "provider:model", or "provider" for its default model
    max_retries = 1             # per provider in the chain; default: [defaults] max_retries, else RetryProvider's
    shuffle = false             # spread load: try the chain in a random order per request
    hedge_after = 3             # failover settings for this route; they win over [defaults]

Failover settings, in ``[defaults]`` (every call) and in routes (that chain; a route's setting beats
``[defaults]``, also when it is false), as in :class:`~polychat.FailoverPolicy`: ``first_token_timeout``,
``idle_timeout``, ``deadline`` and ``hedge_after`` (seconds), ``resume`` (true: continue an interrupted stream on
the next provider) and ``allow_empty`` (true: an empty answer is an answer, not a failure).

Rules:

* A key in the file (``api_key = "sk-..."``) is refused unless the provider also says
  ``allow_plaintext_key = true``. Without ``api_key_env`` a provider with its own ``base_url`` sends no key at
  all (``OPENAI_API_KEY`` is never sent to a server you did not ask for); one without ``base_url`` talks to the
  official endpoint with ``OPENAI_API_KEY``.
* Two providers exist without being declared: ``openai`` (``OpenaiChat`` from ``OPENAI_API_KEY`` /
  ``OPENAI_BASE_URL``) and ``local`` (the embedded SmolLM2 model). Declaring a provider of the same name
  replaces the built-in one.
* How a model name is resolved (:meth:`Config.route`): a route alias; else ``provider`` or ``provider:model``
  naming a known provider; else the declared providers whose ``models`` list it (several: a failover chain in
  file order). Anything else goes to ``[defaults] provider`` if set, else to the default chain — providers
  whose credentials are present, then the embedded model last (:func:`polychat.routing.retry.default_chain`).
* Unknown keys, wrong types, unknown provider types and routes naming undeclared providers are errors
  (:class:`ConfigFileError`) naming the file, the line and the key. Provider types are a small table
  (:data:`PROVIDER_TYPES`); adding one is a row.

Loading is cheap and sends nothing: providers are built (and environment keys read) on first use.

Pieces, their names re-exported here: :mod:`._types` — provider types, key sets, specs;
:mod:`._check` — checking a parsed file, :func:`find_line`; :mod:`._config` — :class:`Config`; :mod:`._load` —
:func:`config_location`, :func:`load_config`, :func:`parse_config`.
"""

from __future__ import annotations

from ..errors import ConfigFileError as ConfigFileError
from ._check import find_line as find_line
from ._config import Config as Config
from ._config import log as log
from ._config import proxy_passwords as proxy_passwords
from ._config import redact_proxy as redact_proxy
from ._load import CONFIG_ENV as CONFIG_ENV
from ._load import config_location as config_location
from ._load import load_config as load_config
from ._load import parse_config as parse_config
from ._types import PROVIDER_TYPES as PROVIDER_TYPES
from ._types import ProviderSpec as ProviderSpec
from ._types import ProviderType as ProviderType
from ._types import RouteSpec as RouteSpec

__all__ = [
    "CONFIG_ENV",
    "PROVIDER_TYPES",
    "Config",
    "ConfigFileError",
    "ProviderSpec",
    "ProviderType",
    "RouteSpec",
    "config_location",
    "load_config",
]
