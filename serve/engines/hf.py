"""Generation with transformers + peft, on CPU or GPU. Adapters switch at run time, no reload."""

from __future__ import annotations

import os
import threading

from nngpt_ray.serve.engines.base import Adapter, Engine, Generated, Sampling, cut_at_stop


class TransformersEngine(Engine):
    MAX_ADAPTERS = 3  # older versions are dropped from memory; their files stay on disk

    def __init__(self, model: str | None, gguf_file: str | None = None, device: str = "auto",
                 dtype: str = "auto", threads: int = 1) -> None:
        import torch

        from nngpt_ray.llm import load_base

        if device != "cuda":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        self.model, self.tokenizer = load_base(model, gguf_file, device, dtype)
        self.device = next(self.model.parameters()).device
        self.peft = None  # a PeftModel around self.model once the first adapter arrives
        self.loaded: list[str] = []
        self.lock = threading.Lock()

    def load_adapter(self, adapter: Adapter) -> None:
        from peft import PeftModel

        with self.lock:
            if adapter.name in self.loaded:
                return
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, adapter.path, adapter_name=adapter.name)
            else:
                self.peft.load_adapter(adapter.path, adapter_name=adapter.name)
            self.peft.eval()
            self.loaded.append(adapter.name)
            while len(self.loaded) > self.MAX_ADAPTERS:
                self.peft.delete_adapter(self.loaded.pop(0))

    def loaded_adapters(self) -> list[str]:
        return list(self.loaded)

    def generate(self, prompts: list[str], sampling: Sampling, adapter: Adapter | None,
                 cancel: threading.Event | None = None) -> Generated:
        """A prompt that does not fit the model's context gets no completion and an error of its own; the
        others are generated as one batch."""
        context = getattr(self.model.config, "max_position_embeddings", None) or 1 << 30
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        errors = [f"the prompt has {n} tokens; the model's context is {context}" if n + 16 > context else None
                  for n in lengths]
        fitting = [p for p, e in zip(prompts, errors, strict=True) if e is None]
        out = self._generate(fitting, sampling, adapter, cancel) if fitting else Generated([], 0, [], [])
        if not any(errors):
            return Generated(out.texts, out.tokens, out.token_ids, out.logprobs, errors)
        parts = iter(range(len(fitting)))
        index = [None if e else next(parts) for e in errors]
        pick = lambda values, empty: None if values is None else [empty if i is None else values[i] for i in index]  # noqa: E731
        return Generated(pick(out.texts, ""), out.tokens, pick(out.token_ids, []), pick(out.logprobs, []), errors)

    def _generate(self, prompts: list[str], sampling: Sampling, adapter: Adapter | None,
                  cancel: threading.Event | None) -> Generated:
        import contextlib

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return cancel is not None and cancel.is_set()

        if adapter is not None:
            self.load_adapter(adapter)
        with self.lock:
            if self.peft is not None and adapter is not None:
                self.peft.set_adapter(adapter.name)
                model, context = self.peft, contextlib.nullcontext()
            elif self.peft is not None:
                model, context = self.peft, self.peft.disable_adapter()
            else:
                model, context = self.model, contextlib.nullcontext()
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            sample = sampling.temperature > 0
            options = dict(do_sample=sample, max_new_tokens=sampling.max_new_tokens,
                           pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
            if sample:
                options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
            if sampling.stop:
                options.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
            if cancel is not None:
                options.update(stopping_criteria=StoppingCriteriaList([Cancelled()]))
            if sampling.logprobs:
                options.update(output_logits=True, return_dict_in_generate=True)
            with context, torch.no_grad():
                out = model.generate(**enc, **options)
        sequences = out.sequences if sampling.logprobs else out
        new = sequences[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        real = new != self.tokenizer.pad_token_id
        generated = Generated([cut_at_stop(t, sampling.stop) for t in texts], int(real.sum()))
        if not sampling.logprobs:
            return generated
        # log-probabilities of the sampled tokens under the logits divided by the temperature: what the
        # learner recomputes for the same tokens (raw logits, not top-k/top-p-processed scores)
        logits = torch.stack(out.logits, dim=1).float() / max(sampling.temperature, 1e-6)
        chosen = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        ids, logprobs = [], []
        for row in range(len(prompts)):
            keep = real[row].nonzero().flatten().tolist()
            ids.append([int(new[row, i]) for i in keep])
            logprobs.append([round(float(chosen[row, i]), 6) for i in keep])
        return Generated(generated.texts, generated.tokens, ids, logprobs)
