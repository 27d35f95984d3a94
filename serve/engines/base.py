"""The engine contract: batched generation under a named, versioned LoRA adapter.

Every adapter version gets a new name and a new integer id, because engines cache adapters by name
(vLLM serves stale weights if a name is reused). A request names the adapter it wants; an engine
that has not seen it yet loads it from its path first, which is also how a restarted replica comes
back with the active adapter.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Adapter:
    name: str  # unique per version, e.g. "adapter-v3"
    version: int  # >= 1; doubles as vLLM's lora_int_id
    path: str  # a directory written by peft's save_pretrained, on storage every replica can read


@dataclass(frozen=True)
class Generated:
    texts: list[str]  # one completion per prompt
    tokens: int  # new tokens generated for all prompts together (the LLM's cost)
    token_ids: list[list[int]] | None = None  # with Sampling.logprobs: each completion's tokens, as sampled
    logprobs: list[list[float]] | None = None  # ... and their log-probabilities under the sampling policy
    errors: list[str | None] | None = None  # per prompt: why it got no completion (it does not fit the context)


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 320
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False  # also return token ids and their log-probabilities (GRPO's old policy)


class Engine(ABC):
    @abstractmethod
    def generate(self, prompts: list[str], sampling: Sampling, adapter: Adapter | None,
                 cancel: threading.Event | None = None) -> Generated:
        """One completion per prompt (prompt text excluded, cut at the first stop string), and the tokens
        generated. When `cancel` is set, stop as soon as possible (the caller no longer wants the answer)."""

    @abstractmethod
    def load_adapter(self, adapter: Adapter) -> None:
        """Make `adapter` available; loading a version already loaded is a no-op."""

    def loaded_adapters(self) -> list[str]:
        return []


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Keep `text` up to and including the first stop string (the stop marks the end of an answer)."""
    ends = [text.index(s) + len(s) for s in stop if s in text]
    return text[:min(ends)] if ends else text
