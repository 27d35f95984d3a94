"""Generation with vLLM (GPU only; the `gpu` extra). Thin on purpose: vLLM does the work.

LoRA through `enable_lora` and one `LoRARequest(name, int_id, path)` per adapter version; vLLM loads
an adapter the first time a request names it and caches it by name and id, which is why every
version has a new name and a new id.
"""

from __future__ import annotations

from nngpt_ray.serve.engines.base import Adapter, Engine, Generated, Sampling


class VLLMEngine(Engine):
    def __init__(self, model: str | None, gguf_file: str | None = None, device: str = "auto", dtype: str = "auto",
                 threads: int = 1, tensor_parallel: int = 1, max_lora_rank: int = 16) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise RuntimeError("the vllm engine needs the GPU extra: pip install 'nngpt-ray[gpu]'") from None
        from nngpt_ray.llm import resolve_model

        name = resolve_model(model)
        kwargs = {"tokenizer": name} if gguf_file else {}
        self.llm = LLM(model=f"{name}/{gguf_file}" if gguf_file else name, dtype=dtype,
                       tensor_parallel_size=tensor_parallel, enable_lora=True, max_lora_rank=max_lora_rank, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.loaded: list[str] = []

    def load_adapter(self, adapter: Adapter) -> None:
        # vLLM loads lazily on the first request that names the adapter; remembering it is enough.
        if adapter.name not in self.loaded:
            self.loaded.append(adapter.name)

    def loaded_adapters(self) -> list[str]:
        return list(self.loaded)

    def generate(self, prompts: list[str], sampling: Sampling, adapter: Adapter | None, cancel=None) -> Generated:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1,
                                max_tokens=sampling.max_new_tokens, stop=list(sampling.stop) or None,
                                include_stop_str_in_output=True, seed=sampling.seed)
        request = LoRARequest(adapter.name, adapter.version, adapter.path) if adapter else None
        if adapter:
            self.load_adapter(adapter)
        outputs = self.llm.generate(prompts, params, lora_request=request, use_tqdm=False)
        return Generated([o.outputs[0].text for o in outputs], sum(len(o.outputs[0].token_ids) for o in outputs))
