"""The LLM deployment: one Ray Serve deployment named `llm`, any number of replicas.

Requests carry prompt payloads (raw text or chat messages) and the adapter they want; the replica
renders prompts with its own tokenizer and loads an adapter version the first time it sees it. So a
new adapter is live as soon as a request names it, and a replica that Serve restarts comes back
serving whatever adapter the next request asks for. No restart, no shared mutable state.
"""

from __future__ import annotations

import time
from typing import Any

from ray import serve

from nngpt_ray.serve.engines import Adapter, Sampling, make_engine

DEPLOYMENT = "llm"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=2, health_check_period_s=10)
class LLMServer:
    def __init__(self, engine: str, options: dict[str, Any]) -> None:
        self.engine = make_engine(engine, **options)
        self.started = time.time()

    def generate(self, payloads: list[dict], sampling: dict, adapter: dict | None) -> list[str]:
        from nngpt_ray.llm import render

        prompts = [render(p, self.engine.tokenizer) for p in payloads]
        return self.engine.generate(prompts, Sampling(**sampling), Adapter(**adapter) if adapter else None)

    def load_adapter(self, adapter: dict) -> list[str]:
        self.engine.load_adapter(Adapter(**adapter))
        return self.engine.loaded_adapters()

    def info(self) -> dict[str, Any]:
        import os

        return {"pid": os.getpid(), "adapters": self.engine.loaded_adapters(), "started": self.started}


def quiet() -> None:
    """Serve logs every application start/stop at INFO on the driver; the run's own progress says it."""
    import logging

    logging.getLogger("ray.serve").setLevel(logging.WARNING)


def deploy(cfg, app_name: str):
    """Start (or replace) the LLM application for a run and return its handle."""
    quiet()
    llm = cfg.llm
    options: dict[str, Any] = {"model": llm.model, "gguf_file": llm.gguf_file, "device": llm.device,
                               "dtype": llm.dtype, "threads": llm.threads}
    if llm.engine == "vllm":
        options.update(tensor_parallel=llm.tensor_parallel, max_lora_rank=llm.max_lora_rank)
    app = LLMServer.options(
        num_replicas=llm.replicas,
        ray_actor_options={"num_cpus": llm.num_cpus, "num_gpus": llm.num_gpus * llm.tensor_parallel},
    ).bind(llm.engine, options)
    return serve.run(app, name=app_name, route_prefix=None)
