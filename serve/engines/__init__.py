"""Text-generation engines behind one small interface; see `base.Engine`."""

from __future__ import annotations

from nngpt_ray.serve.engines.base import Adapter, Engine, Generated, Sampling


def make_engine(kind: str, **options) -> Engine:
    """The engine named by the config; vLLM is imported only when asked for (GPU-only extra)."""
    if kind == "transformers":
        from nngpt_ray.serve.engines.hf import TransformersEngine

        return TransformersEngine(**options)
    if kind == "vllm":
        from nngpt_ray.serve.engines.vllm import VLLMEngine

        return VLLMEngine(**options)
    raise ValueError(f"unknown engine {kind!r}")


__all__ = ["Adapter", "Engine", "Generated", "Sampling", "make_engine"]
