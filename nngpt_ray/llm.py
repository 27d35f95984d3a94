"""Loading a causal LM and turning (prompt, completion) pairs into training batches.

One code path for every model: a Hugging Face id, a local directory, a GGUF file inside one
(`gguf_file=`), or the embedded default (`model=None`). The LLM deployment, the learner and the
bootstrap all go through here, so a prompt is tokenized the same way when it is generated from and
when it is learned from.
"""

from __future__ import annotations

import random
from typing import Any

from nngpt_ray.failures import UserError


def resolve_model(model: str | None) -> str:
    """The path or id to load: the embedded default when `model` is None."""
    if model is not None:
        return model
    from nngpt_ray.bootstrap import require_embedded_model

    return str(require_embedded_model())


def load_base(model: str | None, gguf_file: str | None = None, device: str = "auto", dtype: str = "auto",
              quantization: str = "none"):
    """(model, tokenizer) in eval mode on `device`. Raises UserError with the cause if loading fails.

    quantization "4bit" (QLoRA, CUDA only): the weights in bitsandbytes NF4 with double quantization and
    bf16 compute, prepared for k-bit training (gradient checkpointing); LoRA layers stay in bf16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = resolve_model(model)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"auto": torch.bfloat16 if device == "cuda" else torch.float32, "float32": torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    if quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **({"gguf_file": gguf_file} if gguf_file else {}))
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        raise UserError(f"cannot load model '{name}'{f' (gguf_file={gguf_file})' if gguf_file else ''}: "
                        f"{' '.join(str(err).split())[:400]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(lm, use_gradient_checkpointing=True).eval(), tokenizer
    return lm.to(device).eval(), tokenizer


def render(payload: dict[str, Any], tokenizer: Any) -> str:
    """The exact prompt string for a payload {"text": ...} or {"messages": [...]}."""
    messages = payload.get("messages")
    if not messages:
        return payload.get("text") or ""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def fit_to_length(prompt: list[int], completion: list[int], max_len: int) -> tuple[list[int], list[int]] | None:
    """Prompt and completion token ids within `max_len`: the whole completion survives, and of a prompt
    that is too long its head (the instructions) and its tail (what the completion continues) are kept,
    its middle dropped. None when the completion alone does not leave room for a prompt."""
    if len(prompt) + len(completion) <= max_len:
        return prompt, completion
    budget = max_len - len(completion)
    if budget < 32:
        return None
    head = budget // 2
    return prompt[:head] + prompt[len(prompt) - (budget - head):], completion


def encode_examples(tokenizer, examples: list[tuple], max_len: int) -> list[tuple[list[int], list[int], float]]:
    """(token ids, labels, weight) per (prompt, completion[, weight]) pair; the loss covers the completion
    (and the end token) only. Prompt and completion are tokenized separately, exactly as at generation
    time. An example whose completion cannot fit is left out."""
    out = []
    for example in examples:
        prompt, completion = example[0], example[1]
        weight = float(example[2]) if len(example) > 2 else 1.0
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        fitted = fit_to_length(p, c, max_len)
        if fitted is None:
            continue
        p, c = fitted
        out.append((p + c, [-100] * len(p) + c, weight))
    return out


def batches(encoded, batch_size: int, pad_id: int, rng: random.Random):
    """Length-bucketed, right-padded batches in random order: (input_ids, labels, attention_mask, weights)."""
    import torch

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(groups)
    for group in groups:
        width = max(len(encoded[i][0]) for i in group)
        ids = torch.full((len(group), width), pad_id)
        labels = torch.full((len(group), width), -100)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            x, y = encoded[i][0], encoded[i][1]
            ids[row, :len(x)] = torch.tensor(x)
            labels[row, :len(y)] = torch.tensor(y)
            mask[row, :len(x)] = 1
        weights = torch.tensor([encoded[i][2] if len(encoded[i]) > 2 else 1.0 for i in group])
        yield ids, labels, mask, weights


def token_logprobs(model, ids, mask, labels, temperature=1.0):
    """Per-token log-probabilities of `labels` (-100: not scored) under `model`, and the mask of scored
    tokens: both (batch, length - 1). The logits are divided by `temperature` (one number, or one per
    row), as at sampling."""
    import torch

    temperature = torch.as_tensor(temperature, dtype=torch.float32, device=ids.device).clamp(min=1e-6)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float() / temperature.reshape(-1, 1, 1)
    targets = labels[:, 1:]
    scored = targets != -100
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logprobs * scored, scored
