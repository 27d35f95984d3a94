"""Generation with vLLM's async engine (GPU only; the `gpu` extra). Thin on purpose: vLLM does the work.

UNVERIFIED: vLLM cannot be installed beside this project's torch (every vLLM from 0.29 to 0.33 pins
torch 2.13.0 or 2.14.0), so this engine is written against vLLM's documented API (`AsyncLLMEngine`,
`AsyncEngineArgs`, `SamplingParams`, `LoRARequest`) and has not run here. On a cluster the LLM
deployment gets its own Ray `runtime_env` with vLLM's pins (`llm.runtime_env`, see configs/cluster.yaml),
while drivers, trainers and the learner keep this project's torch.

- continuous batching: each prompt is its own request to the running engine, awaited together;
- a distinct seed per prompt (`sampling.seed + i`), so repeated prompts in a batch are distinct samples;
- a prompt longer than the context is refused on its own (a classified failure of that candidate);
- LoRA through `LoRARequest(name, int_id, path)`: every adapter version has a new name and a new id
  (vLLM caches adapters by name); tensor parallelism from `tensor_parallel` (the deployment reserves the
  GPUs as placement-group bundles);
- a cancelled call aborts its requests in the engine.
"""

from __future__ import annotations

import asyncio
import uuid

from nngpt_ray.serve.engines.base import Adapter, Engine, Generated, Sampling, cut_at_stop


class VLLMEngine(Engine):
    def __init__(self, model: str | None, gguf_file: str | None = None, device: str = "auto", dtype: str = "auto",
                 threads: int = 1, tensor_parallel: int = 1, max_lora_rank: int = 16, max_model_len: int | None = None) -> None:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError:
            raise RuntimeError("the vllm engine needs vLLM (the `gpu` extra, or llm.runtime_env on a cluster)") from None
        from nngpt_ray.llm import resolve_model

        name = resolve_model(model)
        args = AsyncEngineArgs(model=f"{name}/{gguf_file}" if gguf_file else name, tokenizer=name, dtype=dtype,
                               tensor_parallel_size=tensor_parallel, enable_lora=True, max_lora_rank=max_lora_rank,
                               max_model_len=max_model_len)
        self.engine = AsyncLLMEngine.from_engine_args(args)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name)
        self.context = max_model_len or getattr(self.tokenizer, "model_max_length", None) or 4096
        self.loaded: list[str] = []

    def load_adapter(self, adapter: Adapter) -> None:
        # vLLM loads an adapter on the first request that names it; remembering it is enough
        if adapter.name not in self.loaded:
            self.loaded.append(adapter.name)

    def loaded_adapters(self) -> list[str]:
        return list(self.loaded)

    def generate(self, prompts, sampling, adapter, cancel=None) -> Generated:
        raise RuntimeError("the vllm engine is asynchronous: the deployment calls agenerate")

    async def agenerate(self, prompts: list[str], sampling: Sampling, adapter: Adapter | None) -> Generated:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        request = LoRARequest(adapter.name, adapter.version, adapter.path) if adapter else None
        if adapter:
            self.load_adapter(adapter)
        ids = [f"nngpt-{uuid.uuid4().hex}" for _ in prompts]
        errors: list[str | None] = []
        for prompt in prompts:
            length = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            errors.append(f"the prompt has {length} tokens; the model's context is {self.context}"
                          if length + 16 > self.context else None)

        async def one(i: int, prompt: str):
            params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                    top_k=sampling.top_k or -1, max_tokens=sampling.max_new_tokens,
                                    stop=list(sampling.stop) or None, include_stop_str_in_output=True,
                                    seed=None if sampling.seed is None else sampling.seed + i,
                                    logprobs=0 if sampling.logprobs else None)
            final = None
            async for output in self.engine.generate(prompt, params, ids[i], lora_request=request):
                final = output
            return final.outputs[0]

        try:
            outputs = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts) if errors[i] is None))
        except asyncio.CancelledError:
            for request_id in ids:
                await self.engine.abort(request_id)
            raise
        outputs = iter(outputs)
        done = [None if errors[i] else next(outputs) for i in range(len(prompts))]
        texts = ["" if o is None else cut_at_stop(o.text, sampling.stop) for o in done]
        tokens = sum(len(o.token_ids) for o in done if o is not None)
        if not sampling.logprobs:
            return Generated(texts, tokens, errors=errors)
        token_ids = [[] if o is None else list(o.token_ids) for o in done]
        logprobs = [[] if o is None else [lp[t].logprob for lp, t in zip(o.logprobs, o.token_ids, strict=True)]
                    for o in done]
        return Generated(texts, tokens, token_ids, logprobs, errors=errors)
