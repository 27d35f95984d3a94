"""The LLM deployment: one Ray Serve deployment named `llm`, any number of replicas.

Requests carry prompt payloads (raw text or chat messages) and the adapter they want; the replica
renders prompts with its own tokenizer and loads an adapter version the first time it sees it. So a
new adapter is live as soon as a request names it, and a replica that Serve restarts comes back
serving whatever adapter the next request asks for. No restart, no shared mutable state.

A replica whose model cannot be loaded does not crash (Serve would retry it several times and then
report a traceback): it keeps the loader's one-line message, answers `status()` with it, and the
launcher ends the run at once with that message. A request whose caller cancels it (a deadline, Ctrl-C)
stops the engine between tokens instead of running to the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ray import serve

from nngpt_ray.serve.engines import Adapter, Sampling, make_engine

DEPLOYMENT = "llm"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=4, health_check_period_s=10)
class LLMServer:
    def __init__(self, engine: str, options: dict[str, Any], run: str = "", spec: str = "") -> None:
        from nngpt_ray.failures import UserError

        self.started, self.run, self.spec = time.time(), run, spec
        self.engine, self.error = None, None
        try:
            self.engine = make_engine(engine, **options)
        except UserError as err:
            self.error = " ".join(str(err).split())
        except Exception as err:  # any loader failure is reported, never crash-looped
            self.error = f"cannot start the {engine} engine: {type(err).__name__}: {' '.join(str(err).split())[:400]}"

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "error": self.error, "started": self.started, "spec": self.spec,
                "adapters": self.engine.loaded_adapters() if self.engine else []}

    async def generate(self, payloads: list[dict], sampling: dict, adapter: dict | None) -> dict[str, Any]:
        """{"texts": one completion per prompt, "tokens": new tokens generated, "seconds": engine time,
        "prompts": the rendered prompts, "errors": per prompt why it got no completion (or None), and with
        sampling["logprobs"]: "token_ids", "logprobs"}."""
        if self.engine is None:
            raise RuntimeError(self.error)
        from nngpt_ray.actors import metrics
        from nngpt_ray.llm import render

        started = time.monotonic()
        prompts = [render(p, self.engine.tokenizer) for p in payloads]
        chosen = Adapter(**adapter) if adapter else None
        if hasattr(self.engine, "agenerate"):  # an async engine batches across requests itself
            out = await self.engine.agenerate(prompts, Sampling(**sampling), chosen)
        else:
            cancel = threading.Event()
            try:
                out = await asyncio.to_thread(self.engine.generate, prompts, Sampling(**sampling), chosen, cancel)
            except asyncio.CancelledError:
                cancel.set()  # stop the engine between tokens; nobody wants the answer any more
                raise
        seconds = time.monotonic() - started
        metrics.record("histogram", "nngpt_llm_request_seconds", "one generation request", seconds, self.run)
        metrics.record("counter", "nngpt_llm_tokens", "tokens generated", float(out.tokens), self.run)
        return {"texts": out.texts, "tokens": out.tokens, "seconds": seconds, "token_ids": out.token_ids,
                "logprobs": out.logprobs, "errors": out.errors, "prompts": prompts}

    async def load_adapter(self, adapter: dict) -> list[str]:
        if self.engine is None:
            raise RuntimeError(self.error)
        await asyncio.to_thread(self.engine.load_adapter, Adapter(**adapter))
        return self.engine.loaded_adapters()


def quiet() -> None:
    """Serve logs every application start/stop at INFO on the driver; the run's own progress says it."""
    import logging

    logging.getLogger("ray.serve").setLevel(logging.WARNING)


def deploy(cfg, app_name: str):
    """Start (or replace) the LLM application for a run and return its handle. Raises UserError with the
    loader's message if the model cannot be loaded.

    A healthy application of the same name deployed with the same settings is kept as it is: it is what a
    driver killed without its cleanup (SIGKILL, a lost head node process) left behind, and `--resume` then
    does not wait for the model to load again. Its cached adapters are safe to keep: a version is loaded only
    after the store recorded it, and the loop never makes a recorded version again."""
    from nngpt_ray.failures import UserError

    quiet()
    llm = cfg.llm
    spec, options, actor_options, placement = _settings(cfg)
    kept = _running(app_name, spec)
    if kept is not None:
        return kept
    app = LLMServer.options(num_replicas=llm.replicas, ray_actor_options=actor_options, **placement).bind(
        llm.engine, options, app_name.removeprefix("nngpt-llm-"), spec)
    try:
        handle = serve.run(app, name=app_name, route_prefix=None)
    except RuntimeError as err:  # the replica could not even be built (a runtime_env, an image without the package)
        raise UserError(f"the LLM deployment did not start: {_deploy_failure(app_name) or err}") from None
    error = handle.status.remote().result()["error"]
    if error:
        raise UserError(error)
    return handle


def _settings(cfg) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The deployment's engine options, actor options and placement, and `spec`: their fingerprint, with the
    model files' sizes and modification times (weights replaced at the same path are other settings)."""
    llm = cfg.llm
    options: dict[str, Any] = {"model": llm.model, "gguf_file": llm.gguf_file, "device": llm.device,
                               "dtype": llm.dtype, "threads": llm.threads}
    if llm.engine == "vllm":
        options.update(tensor_parallel=llm.tensor_parallel, max_lora_rank=llm.max_lora_rank,
                       max_model_len=llm.max_model_len)
    actor_options: dict[str, Any] = {"num_cpus": llm.num_cpus, "num_gpus": llm.num_gpus}
    placement: dict[str, Any] = {}
    if llm.tensor_parallel > 1:  # the replica holds the first GPU; vLLM's workers use the group's other bundles
        placement = {"placement_group_bundles": [{"CPU": llm.num_cpus, "GPU": llm.num_gpus}]
                     + [{"GPU": llm.num_gpus}] * (llm.tensor_parallel - 1), "placement_group_strategy": "STRICT_PACK"}
    if llm.runtime_env:
        actor_options["runtime_env"] = llm.runtime_env
    spec = json.dumps({"engine": llm.engine, "options": options, "replicas": llm.replicas, "actor": actor_options,
                       "placement": placement, "files": _files_stamp(llm.model)}, sort_keys=True, default=str)
    return spec, options, actor_options, placement


def _files_stamp(model: str) -> list[int] | None:
    """Total size and latest modification time (ns) of the files at a local model path; None for a name
    that is not a local path (a hub id, resolved by the replica)."""
    path = Path(model)
    if not path.exists():
        return None
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    stats = [f.stat() for f in files]
    return [sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)]


def _running(app_name: str, spec: str):
    """The handle of `app_name` if it is running, healthy and deployed with `spec`; None otherwise."""
    from ray.serve.schema import ApplicationStatus

    try:
        app = serve.status().applications.get(app_name)
        if app is None or app.status != ApplicationStatus.RUNNING:
            return None
        handle = serve.get_app_handle(app_name)
        status = handle.status.remote().result(timeout_s=30)
    except Exception:  # noqa: BLE001 - anything odd about the old application: replace it
        return None
    return handle if status.get("spec") == spec and not status.get("error") else None


def _deploy_failure(app_name: str) -> str | None:
    """The last line of what Serve recorded against the application's deployments: their tracebacks end in
    the cause (`ModuleNotFoundError: No module named ...`, `ValueError: Could not find Conda executable ...`)."""
    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # noqa: BLE001 - only for the message; the caller raises anyway
        return None
    messages = [d.message for d in (app.deployments.values() if app else ()) if d.message]
    lines = [line.strip() for text in messages for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else None
