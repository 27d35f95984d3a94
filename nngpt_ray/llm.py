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


def load_base(model: str | None, gguf_file: str | None = None, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) in eval mode on `device`. Raises UserError with the cause if loading fails."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = resolve_model(model)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"auto": torch.bfloat16 if device == "cuda" else torch.float32, "float32": torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        raise UserError(f"cannot load model '{name}'{f' (gguf_file={gguf_file})' if gguf_file else ''}: "
                        f"{' '.join(str(err).split())[:400]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return lm.to(device).eval(), tokenizer


def render(payload: dict[str, Any], tokenizer: Any) -> str:
    """The exact prompt string for a payload {"text": ...} or {"messages": [...]}."""
    messages = payload.get("messages")
    if not messages:
        return payload.get("text") or ""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def encode_examples(tokenizer, examples: list[tuple[str, str]], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels; the loss covers the completion (and the end token) only.

    Prompt and completion are tokenized separately, exactly as at generation time."""
    out = []
    for prompt, completion in examples:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (p + c)[-max_len:]
        labels = ([-100] * len(p) + c)[-max_len:]
        out.append((ids, labels))
    return out


def batches(encoded, batch_size: int, pad_id: int, rng: random.Random):
    """Length-bucketed, right-padded batches in random order: (input_ids, labels, attention_mask)."""
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
            x, y = encoded[i]
            ids[row, :len(x)] = torch.tensor(x)
            labels[row, :len(y)] = torch.tensor(y)
            mask[row, :len(x)] = 1
        yield ids, labels, mask
