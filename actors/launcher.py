"""The launcher: joins or starts Ray, places the run's actors and the LLM application, and hands back
typed handles. It decides where things run; the controller decides what they do.

    store, dedup, predictor   on the driver's node: SQLite must have one writer on a local disk (its locking
                              is not safe over NFS), and `ray job submit` runs the driver on the head
    trainer-0..N              spread over the cluster's nodes, `trainers.num_cpus/num_gpus/resources` each
    learner                   `learner.num_cpus/num_gpus`: with GPUs of its own, started with the run (its
                              base model loads while the first cycle generates and trains); on CPUs, at the
                              first update (loading it earlier would take the CPUs the first cycle's
                              generation and training run on, and a run that ends before its first update
                              never pays for it)
    LLM application           Ray Serve, `llm.replicas` replicas

Everything it started is removed again when the `launched()` block ends, however it ends (Ctrl-C
during start-up included). A part that cannot start ends the run with one line naming it: at start-up,
except the learner, which is first needed at the first update (where the controller ends the run the
same way if it could not start).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nngpt_ray import faults
from nngpt_ray.actors import actor_name
from nngpt_ray.actors.dedup import DedupActor
from nngpt_ray.actors.learner import LearnerActor
from nngpt_ray.actors.predictor import PredictorActor
from nngpt_ray.actors.store import StoreActor
from nngpt_ray.actors.trainer import TrainerActor
from nngpt_ray.config import Config
from nngpt_ray.failures import UserError
from nngpt_ray.rundir import RunDir


@dataclass
class Handles:
    """The run's actors (typed handles: `handles.store.complete.remote(...)`) and its LLM application."""

    run: str
    store: Any = None
    dedup: Any = None
    predictor: Any = None
    learner: Any = None
    trainers: list[Any] = field(default_factory=list)
    llm: Any = None  # a Serve DeploymentHandle
    serving: bool = False  # the LLM application was (being) deployed
    new_learner: Callable[[], Any] | None = None  # starts the learner actor (the launcher's placement)

    @property
    def app(self) -> str:
        return f"nngpt-llm-{self.run}"

    def actors(self) -> list[Any]:
        return [a for a in (self.store, self.dedup, self.predictor, self.learner, *self.trainers) if a is not None]

    def learner_actor(self) -> Any:
        """The learner, started now where the run did not start it."""
        if self.learner is None:
            self.learner = self.new_learner()
        return self.learner


def cluster_address(cfg: Config) -> str | None:
    """The cluster a run joins: `ray.address`, else RAY_ADDRESS (set by `ray job submit`); None: it starts
    a local Ray of its own."""
    return cfg.ray.address or os.environ.get("RAY_ADDRESS")


def init_ray(cfg: Config) -> None:
    """Join the cluster at `cluster_address`; without one, start a private local instance (never whatever
    /tmp/ray last pointed at)."""
    if ray.is_initialized():
        return
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    address = cluster_address(cfg)
    if address:
        _reachable(address)
        ray.init(address=address, namespace=cfg.ray.namespace, log_to_driver=False)
        return
    # it announces, as a warning, that token authentication is on: the safe default for an instance we own
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, namespace=cfg.ray.namespace, log_to_driver=False,
             include_dashboard=cfg.ray.dashboard, configure_logging=True, logging_level=logging.WARNING)


PARTS = ("trainers", "learner", "llm")  # the config sections whose actors ask Ray for resources


def requests(cfg: Config, parts: tuple[str, ...] = PARTS) -> dict[str, dict[str, float]]:
    """What one actor of each part asks a single node for: a trainer (a Tune trial asks the same), the
    learner, and an LLM replica (with vLLM tensor parallelism, its placement group packs every GPU on one node)."""
    t, learner, llm = cfg.trainers, cfg.learner, cfg.llm
    asked = {"trainers": {"CPU": t.num_cpus, "GPU": t.num_gpus, **t.resources},
             "learner": {"CPU": learner.num_cpus, "GPU": learner.num_gpus},
             "llm": {"CPU": llm.num_cpus, "GPU": llm.num_gpus * llm.tensor_parallel}}
    return {part: {k: v for k, v in asked[part].items() if v > 0} for part in parts}


def unplaceable(asked: dict[str, dict[str, float]], nodes: list[dict[str, float]]) -> list[str]:
    """One line for each part whose request no node could hold even when idle (`nodes`: each node's total
    resources). Ray would keep such an actor pending for ever."""
    def amounts(resources: dict[str, float], keys) -> str:
        return ", ".join(f"{k} {resources.get(k, 0):g}" for k in keys)

    lines = []
    for part, request in asked.items():
        if any(all(node.get(k, 0) >= v for k, v in request.items()) for node in nodes):
            continue
        have = "; ".join(dict.fromkeys(amounts(node, request) for node in nodes)) or "nothing"
        lines.append(f"{part}: each asks one node for {amounts(request, request)}, and "
                     f"{'its node has' if len(nodes) == 1 else 'its nodes have'} {have}")
    return lines


def check_placeable(cfg: Config, parts: tuple[str, ...] = PARTS, say=print) -> None:
    """Refuse, with one line, a run that asks for resources no node of a local Ray has (a GPU setting on a
    laptop would otherwise wait for ever). A cluster joined by address may have an autoscaler that adds such
    a node: there it is a warning, and the dashboard shows the pending actor."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    lines = unplaceable(requests(cfg, parts), nodes)
    if not lines:
        return
    if cluster_address(cfg):
        for line in lines:
            say(f"warning: {line}; the run waits until the cluster has such a node (an autoscaler may add one)")
        return
    raise UserError(f"the local Ray cannot place this run: {'; '.join(lines)}; lower these settings, or join a "
                    f"cluster that has such nodes (ray.address)")


def _reachable(address: str, timeout_s: float = 15.0) -> None:
    """Fail within `timeout_s`, with one line, when nothing answers at `address` (ray.init would retry a dead
    head for minutes). Addresses Ray resolves itself ("auto", "local", a ray:// client URL) are left to it."""
    import socket

    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as err:
        raise UserError(f"cannot reach the Ray cluster at {address} ({getattr(err, 'strerror', None) or err}); "
                        f"check ray.address / RAY_ADDRESS, or unset both to start a local Ray") from None


@contextlib.contextmanager
def launched(cfg: Config, run: RunDir) -> Iterator[Handles]:
    """Start every part of the run; remove them all when the block ends."""
    handles = Handles(run=run.root.name)
    try:
        _start(cfg, run, handles)
        yield handles
    finally:
        shutdown(handles)


@contextlib.contextmanager
def store_only(run: RunDir) -> Iterator[Any]:
    """Just the run's store actor (a search on Ray Tune writes its trials there), removed afterwards."""
    name = actor_name("store", run.root.name)
    _kill_if_alive(name)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    store = StoreActor.options(name=name, scheduling_strategy=here).remote(str(run.store), run=run.root.name)
    try:
        ray.get(store.__ray_ready__.remote())
        yield store
    finally:
        with contextlib.suppress(Exception):
            ray.kill(store, no_restart=True)


def _start(cfg: Config, run: RunDir, h: Handles) -> None:
    from ray import serve

    from nngpt_ray.serve.app import deploy, quiet

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    env = {"runtime_env": {"env_vars": faults.forwarded()}} if faults.forwarded() else {}
    stages = ["store", "dedup", "predictor", "learner", *(f"trainer-{i}" for i in range(cfg.trainers.count))]
    for stage in stages:  # left by a driver of this run that was killed (resume): they go first
        _kill_if_alive(actor_name(stage, h.run))
    plain = cfg.model_dump(mode="json")
    h.store = StoreActor.options(name=actor_name("store", h.run), scheduling_strategy=here).remote(str(run.store),
                                                                                                     run=h.run)
    h.dedup = DedupActor.options(name=actor_name("dedup", h.run), scheduling_strategy=here).remote(
        cfg.dedup.model_dump(), str(run.store), cfg.task.kind, cfg.corpus.path)
    h.predictor = PredictorActor.options(name=actor_name("predictor", h.run), scheduling_strategy=here).remote(
        cfg.predictor.model_dump(), str(run.store))
    h.trainers = [
        TrainerActor.options(name=actor_name(f"trainer-{i}", h.run), num_cpus=cfg.trainers.num_cpus,
                             num_gpus=cfg.trainers.num_gpus, resources=cfg.trainers.resources or None,
                             scheduling_strategy="SPREAD", **env).remote(
            plain, f"trainer-{i}", h.run)
        for i in range(cfg.trainers.count)]
    quiet()
    serve.start(proxy_location="Disabled")
    h.serving = True
    h.llm = deploy(cfg, h.app)  # raises UserError with the loader's message if the model cannot load
    h.new_learner = lambda: LearnerActor.options(name=actor_name("learner", h.run), num_cpus=cfg.learner.num_cpus,
                                                 num_gpus=cfg.learner.num_gpus, **env).remote(plain, h.run)
    if cfg.learner.num_gpus > 0:  # last, so that it does not slow the start of what the first cycle needs
        h.learner_actor()
    for stage, actor in [("store", h.store), ("dedup", h.dedup), ("predictor", h.predictor),
                         *((f"trainer-{i}", t) for i, t in enumerate(h.trainers))]:
        try:
            ray.get(actor.__ray_ready__.remote())
        except ray.exceptions.RayError as err:
            raise UserError(not_started(stage, err)) from None


def shutdown(h: Handles) -> None:
    """Remove this run's actors and LLM application (a local Ray started here stops with the process)."""
    from ray import serve

    from nngpt_ray.serve.app import quiet

    quiet()
    if h.serving:
        with contextlib.suppress(Exception):  # the run is over either way; Serve may already be gone
            serve.delete(h.app)
    for actor in h.actors():
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)


def not_started(stage: str, err: BaseException) -> str:
    """The line that ends a run whose `stage` actor could not be created (at start-up, or the learner at
    its first update)."""
    return f"the {stage} actor could not start: {_cause(err)}"


def _cause(err: BaseException) -> str:
    """The one line that says what went wrong inside a Ray error (the innermost exception's message)."""
    if isinstance(err, ray.exceptions.RayActorError) and err.actor_init_failed:
        return str(err).strip().splitlines()[-1].strip()  # its message ends in what the actor's __init__ raised
    cause = getattr(err, "cause", None) or getattr(err, "__cause__", None)
    if isinstance(cause, BaseException) and cause is not err:
        return _cause(cause)
    text = " ".join(str(err).split())
    return text if isinstance(err, UserError) else f"{type(err).__name__}: {text}"[:400]


def _kill_if_alive(name: str) -> None:
    try:
        stale = ray.get_actor(name)
    except ValueError:
        return
    ray.kill(stale, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        time.sleep(0.2)
