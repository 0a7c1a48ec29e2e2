"""The gateway the protocol tests (``/v1/messages``, ``/v1/responses``) share: the real llama.cpp server, the
embedded model, the fault-injecting server and the fake Anthropic upstream behind one ``polychat serve``.

Models (each a provider of its own, so circuit breakers of one test never touch another's):

* ``llama-smol`` — the llama.cpp server; ``local`` — the embedded model;
* ``claude-fake`` — the fake Anthropic upstream answering with thinking + text; ``claude-busy`` — it answers 529;
  ``claude-sonnet-4-5-20250929`` — its ``session`` scenario, for the recorded Claude Code session;
* routes: ``dead-first`` (a closed port, then llama.cpp), ``cut-resume`` / ``cut-stop`` (an Anthropic upstream
  that drops the connection after the first text delta, then llama.cpp; ``resume`` on / off), ``oai-cut-resume``
  / ``oai-cut-stop`` (the same with the fault server's OpenAI stream reset after 3 chunks), ``busy-then-claude``.
"""

from __future__ import annotations

from tests.support.fake_anthropic import Answer, CutAfter, Fail, FakeAnthropic
from tests.support.faults import FaultServer, ResetAfter
from tests.support.servers import LlamaServer, free_port

UPSTREAM_KEY = "sk-ant-upstream-SECRET-0123456789"
#: The model the recorded Claude Code session asks for (tests/fixtures/sessions/claude_code.json).
SESSION_MODEL = "claude-sonnet-4-5-20250929"
#: Events of the fake answer up to and including the first text delta (message_start ... text_delta).
FIRST_TEXT = 9


def protocol_gateway_config(fake: FakeAnthropic, fault: FaultServer, llama: LlamaServer) -> str:
    lines = ["[defaults]", "max_retries = 0", ""]

    def provider(name: str, kind: str, base_url: str, models: list[str], key_env: str | None = None) -> None:
        lines.extend([f"[providers.{name}]", f'type = "{kind}"', f'base_url = "{base_url}"', f"models = {models!r}"])
        if key_env:
            lines.append(f'api_key_env = "{key_env}"')
        lines.append("")

    provider("llama", "openai", llama.base_url, ["llama-smol"])
    provider("claude", "anthropic", fake.scenario("claude", Answer()), ["claude-fake"], "FAKE_ANTHROPIC_KEY")
    provider("busy", "anthropic", fake.scenario("busy", Fail(529)), ["claude-busy"], "FAKE_ANTHROPIC_KEY")
    for name in ("cutr", "cuts"):
        provider(name, "anthropic", fake.scenario(name, CutAfter(FIRST_TEXT)), [], "FAKE_ANTHROPIC_KEY")
    for name in ("ocutr", "ocuts"):
        provider(name, "openai", fault.scenario(name, ResetAfter(3)), [])
    provider("session", "anthropic", fake.scenario("session", Answer()), [SESSION_MODEL], "FAKE_ANTHROPIC_KEY")
    provider("refused", "openai", f"http://127.0.0.1:{free_port()}/v1", [])

    def route(name: str, chain: list[str], **extra: object) -> None:
        lines.extend([f"[routes.{name}]", f"chain = {chain!r}".replace("'", '"'), "max_retries = 0"])
        lines.extend(f"{k} = {str(v).lower()}" for k, v in extra.items())
        lines.append("")

    route("dead-first", ["refused:m", "llama:llama-smol"])
    route("cut-resume", ["cutr:claude-fake", "llama:llama-smol"], resume=True)
    route("cut-stop", ["cuts:claude-fake", "llama:llama-smol"], resume=False)
    route("oai-cut-resume", ["ocutr:m", "llama:llama-smol"], resume=True)
    route("oai-cut-stop", ["ocuts:m", "llama:llama-smol"], resume=False)
    route("busy-then-claude", ["busy:claude-busy", "claude:claude-fake"])
    return "\n".join(lines)
