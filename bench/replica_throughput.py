"""Generation throughput of the LLM deployment with 1 and with 2 replicas, in one run.

    python bench/replica_throughput.py [--requests 12] [--batch 6] [--max-new-tokens 160]

Starts local Ray and Serve, deploys the embedded default model (the same `serve.app.deploy` a run uses)
with `llm.replicas` = 1, then 2, and keeps as many generation requests in flight as there are replicas
(what `llm.requests_in_flight` does in the controller). Each request is a batch of `fill` prompts from the
seed corpus. Prints tokens/s for each and the ratio. On a CPU machine each replica needs its own core
(`llm.num_cpus: 1`, one thread): a 2-core machine is the smallest that can show the doubling.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    args = ap.parse_args()

    import ray
    from ray import serve

    from nngpt_ray.bootstrap import ensure_embedded_model
    from nngpt_ray.config import Config
    from nngpt_ray.corpus import seed_entries
    from nngpt_ray.datasets import dataset_info
    from nngpt_ray.serve.app import deploy
    from nngpt_ray.spec import Transform
    from nngpt_ray.tasks import make_task

    model = ensure_embedded_model()
    task = make_task("fill", dataset_info("digits"), 2, Transform(), 1)
    rng = random.Random(0)
    payloads = [[task.prompt(seed_entries(), rng).payload() for _ in range(args.batch)] for _ in range(args.requests)]
    sampling = {"max_new_tokens": args.max_new_tokens, "temperature": 0.6, "stop": list(task.stop)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    results = {}
    for replicas in (1, 2):
        cfg = Config.model_validate({"llm": {"model": str(model), "replicas": replicas, "num_cpus": 1, "threads": 1}})
        handle = deploy(cfg, f"nngpt-llm-bench{replicas}")
        handle.generate.remote(payloads[0][:1], sampling, None).result()  # every replica loaded: warm up
        for _ in range(replicas):
            handle.generate.remote(payloads[0][:1], sampling, None).result()

        async def drive(h=handle, in_flight=replicas) -> tuple[int, float]:
            queue = list(payloads)
            tokens = 0

            async def worker() -> None:
                nonlocal tokens
                while queue:
                    out = await h.generate.remote(queue.pop(), sampling, None)
                    tokens += out["tokens"]

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return tokens, time.monotonic() - started

        tokens, seconds = asyncio.run(drive())
        results[replicas] = tokens / seconds
        print(f"{replicas} replica(s), {replicas} request(s) in flight: {tokens} tokens in {seconds:.1f} s = "
              f"{results[replicas]:.0f} tokens/s", flush=True)
        serve.delete(f"nngpt-llm-bench{replicas}")
    print(f"2 replicas / 1 replica: {results[2] / results[1]:.2f}x tokens/s "
          f"({args.requests} requests of {args.batch} fill prompts, {args.max_new_tokens} new tokens at most)")
    ray.shutdown()


if __name__ == "__main__":
    main()
