"""The ``runner:`` block of an agent, one model per kind, checked when the spec is loaded.

``runner:`` is a discriminated union on ``kind``: :class:`ProgramRunnerSpec` (``program``: a Python
callable or a command), :class:`LlmRunnerSpec` (``llm``: a model through pydantic-ai) and
:class:`ProcessRunnerSpec` (``process``: an external agent CLI). Each refuses keys it does not know, so a
typo such as ``baseurl:`` or ``timout:`` is a spec error with its file and line rather than a runner that
is silently left out of ``roster up``. The runtime builds its runners from these same models
(:mod:`roster.runtime.runners`, :mod:`roster.runtime.llm`, :mod:`roster.runtime.process`).

This module is pure data: it imports neither pydantic-ai nor anything of the runtime. The model string of
an ``llm`` runner is checked against :data:`KNOWN_PROVIDERS`, pydantic-ai's provider names, kept here as a
list (a test compares it with pydantic-ai's own, so it cannot drift).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, model_validator

OFFLINE = "offline"
"""The ``llm`` runner's scripted stand-in model: no network, and every answer says it was scripted."""

KNOWN_PROVIDERS = frozenset({
    "alibaba", "anthropic", "azure", "azure-responses", "bedrock", "bedrock-mantle", "cerebras", "cohere", "crusoe",
    "deepseek", "fireworks", "github", "github-copilot", "google", "google-cloud", "google-decisions", "groq",
    "heroku", "huggingface", "litellm", "meta", "mistral", "moonshotai", "nebius", "ollama", "openai",
    "openai-chat", "openai-chatgpt", "openai-codex", "openai-decisions", "openai-responses", "openrouter",
    "ovhcloud", "sambanova", "snowflake", "together", "typesafe", "vercel", "vllm", "xai", "zai",
})
"""The provider prefixes pydantic-ai knows (``provider:model``); ``gateway/<provider>`` is accepted too.
Kept in step with ``pydantic_ai.providers.infer_provider_class`` by ``tests/test_validation.py``."""

BASE_URL_PROVIDERS = ("openai", "anthropic")
"""Providers whose ``base_url`` and ``api_key_env`` the ``llm`` runner sets itself."""

DEFAULT_PROGRAM_TIMEOUT = 600.0
"""Seconds a ``program`` command may run by default (10 minutes: room for a few model calls of minutes each)."""
DEFAULT_PROCESS_TIMEOUT = 3600.0
"""Seconds an agent CLI may work on one run by default (an hour: they often work half an hour or more)."""


class _RunnerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProgramRunnerSpec(_RunnerSpec):
    """``kind: program``: exactly one of ``callable`` (``module:function``, called in Roster's process with
    the brief as a dict) or ``command`` (any command: brief as JSON on stdin, result as JSON on stdout,
    killed with its process group after ``timeout`` seconds)."""

    kind: Literal["program"] = "program"
    callable: str | None = Field(None, min_length=1)
    command: str | None = Field(None, min_length=1)
    timeout: float = Field(DEFAULT_PROGRAM_TIMEOUT, gt=0)
    """Seconds a ``command`` may run (it does not apply to a ``callable``, which no timeout can stop)."""
    token: bool = False
    """Whether a ``command`` gets a token of its own for the run, in ``ROSTER_TOKEN`` (revoked when the run
    ends), to act through the CLI or the store's ``Session`` as its agent, with its rights: e.g. to take
    a transition that is not offered (``offered: false``) on another task."""

    @model_validator(mode="after")
    def _one_way_to_run(self) -> ProgramRunnerSpec:
        if (self.callable is None) == (self.command is None):
            raise ValueError("a program runner needs exactly one of 'callable: module:function' or "
                             "'command: ...'")
        if self.token and self.command is None:
            raise ValueError("'token: true' is for a 'command' (a callable runs inside Roster and acts through "
                             "its result only); drop 'token' or use 'command'")
        if self.callable is not None:
            module, _, function = self.callable.partition(":")
            if not module or not function:
                raise ValueError(f"runner callable '{self.callable}': expected 'module:function'")
        return self


class LlmRunnerSpec(_RunnerSpec):
    """``kind: llm``: a language model decides each run, through pydantic-ai (see :mod:`roster.runtime.llm`).

    ``model`` is ``provider:model`` with a provider pydantic-ai knows (:data:`KNOWN_PROVIDERS`), e.g.
    ``openai:gpt-4o-mini``, or ``offline`` (the scripted stand-in). ``base_url`` points an ``openai`` model
    at any server speaking the Chat Completions wire format (Ollama, vLLM, LiteLLM, OpenRouter), or an
    ``anthropic`` model at another endpoint; ``api_key_env`` names the environment variable with its key.
    """

    kind: Literal["llm"] = "llm"
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float = Field(300.0, gt=0)
    """Seconds one model request may take: reasoning models answer in minutes, not seconds."""
    max_retries: int = Field(2, ge=0, le=10)
    """The provider SDK's own retries of a failed request (429, 5xx, timeouts)."""
    output_retries: int = Field(1, ge=0, le=10)
    """How many times the model is asked again after an answer that cannot be applied."""
    max_requests: int = Field(20, ge=1, le=200)
    """Model requests allowed in one run (each tool call takes one)."""
    offline_script: str | None = None
    """For ``model: offline`` only: ``module:function`` scripting its decisions (brief dict in, decision
    dict out); its output is still labelled as scripted."""

    @property
    def provider(self) -> str | None:
        """``openai`` of ``openai:gpt-4o-mini``; ``None`` for the offline model."""
        return None if self.model == OFFLINE else self.model.partition(":")[0]

    @property
    def model_id(self) -> str:
        """``gpt-4o-mini`` of ``openai:gpt-4o-mini``."""
        return self.model.partition(":")[2]

    @model_validator(mode="after")
    def _known_model(self) -> LlmRunnerSpec:
        if self.model == OFFLINE:
            if self.base_url or self.api_key_env:
                raise ValueError("the offline model takes no base_url or api_key_env")
            return self
        provider, sep, name = self.model.partition(":")
        if not sep or not provider or not name:
            raise ValueError(f"model '{self.model}': expected 'provider:model' (e.g. 'openai:gpt-4o-mini', "
                             f"'anthropic:claude-sonnet-4-5') or '{OFFLINE}'")
        if not is_known_provider(provider):
            raise ValueError(f"model '{self.model}': unknown provider '{provider}'"
                             f"{did_you_mean(provider, KNOWN_PROVIDERS)}; expected one of pydantic-ai's providers "
                             f"({', '.join(sorted(KNOWN_PROVIDERS))}); for a server speaking the OpenAI wire "
                             "format use 'openai:<model>' with base_url")
        if provider not in BASE_URL_PROVIDERS and (self.base_url or self.api_key_env):
            raise ValueError(f"base_url and api_key_env are supported for {' and '.join(BASE_URL_PROVIDERS)} "
                             f"models, not '{provider}'")
        if self.offline_script:
            raise ValueError(f"offline_script scripts the offline model; remove it to use '{self.model}'")
        return self


class ProcessRunnerSpec(_RunnerSpec):
    """``kind: process``: an external agent CLI (``claude -p``, ``codex exec``) or any command, working as
    the agent with a short-lived token (see :mod:`roster.runtime.process`)."""

    kind: Literal["process"] = "process"
    command: str = Field(min_length=1)
    timeout: float = Field(DEFAULT_PROCESS_TIMEOUT, gt=0)
    """Seconds the command may work on one run; past it its whole process group is killed."""
    prompt_arg: bool = True
    """Whether the brief's prompt file is passed as the command's last argument."""
    mcp_config: str | None = ".mcp.json"
    """Where the agent CLI's MCP configuration is written for the run (``null``: none is written)."""


RunnerSpec = Annotated[ProgramRunnerSpec | LlmRunnerSpec | ProcessRunnerSpec, Discriminator("kind")]
"""An agent's ``runner:`` block: one of the three kinds, chosen by ``kind``."""

RUNNER_KINDS = ("program", "llm", "process")


def is_known_provider(provider: str) -> bool:
    """Whether ``provider`` (the part of a model string before ``:``) is one pydantic-ai knows."""
    return provider.removeprefix("gateway/") in KNOWN_PROVIDERS


def did_you_mean(word: str, choices: object) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a mistyped ``word``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(word, sorted(map(str, choices)), n=1, cutoff=0.6)  # type: ignore[call-overload]
    return f" (did you mean '{close[0]}'?)" if close else ""
