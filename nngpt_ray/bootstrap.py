"""The embedded default model: a small causal LM that nngpt-ray builds for itself, offline.

No weights can be downloaded, so `nngpt run` with no model configured uses a model trained here on
the seed corpus: a byte-level BPE tokenizer and a small Llama-architecture transformer (both plain
Hugging Face objects, so the same engine, peft LoRA and vLLM code paths serve it), trained on the
`fill` task over validated mutants of the seed networks with random hyperparameters. Whole-file
generation needs a pretrained code model (REFERENCE.md: 0 of 20 whole files valid from a 0.9 M model);
the fill format asks for ~100 tokens of layer definitions instead, which a model this size learns.

The model is cached under ~/.cache/nngpt/embedded/<recipe hash>/ and rebuilt when the recipe or the
seed corpus changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nngpt_ray.corpus import seed_entries
from nngpt_ray.datasets import dataset_info
from nngpt_ray.failures import UserError
from nngpt_ray.llm import batches, encode_examples
from nngpt_ray.mutants import shape_check, valid_mutants
from nngpt_ray.parsing import ParseFailure
from nngpt_ray.spec import Origin, Transform
from nngpt_ray.surgery import split
from nngpt_ray.tasks.fill import FillTask, completion_text

EOS = "<|endoftext|>"
PAD = "<|pad|>"
DEFAULT_ROOT = Path("~/.cache/nngpt/embedded")
# Datasets the bootstrap prompts mention, with weights: mostly the embedded default.
_DATASETS = (("digits", 6), ("mnist", 2), ("fashion_mnist", 1), ("cifar10", 1))


@dataclass(frozen=True)
class Recipe:
    mutants_per_family: int = 140
    vocab_size: int = 2048
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 1024
    train_steps: int = 520  # what a quiet 2-core machine does in about 6 minutes
    max_train_seconds: float = 450.0  # on a slower or busier machine the schedule compresses to this
    batch_size: int = 8
    lr: float = 3e-3
    seed: int = 0
    families: tuple[str, ...] | None = None  # seed families to learn (default: all)


def model_dir(root: Path = DEFAULT_ROOT, recipe: Recipe = Recipe()) -> Path:
    """Cache folder keyed by everything the model depends on: the recipe, the seeds, and the code that
    makes its training data and prompts (so a changed prompt format never meets a stale model)."""
    from nngpt_ray import surgery
    from nngpt_ray.tasks import fill

    digest = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    for seed in seed_entries():
        digest.update(seed.code.encode())
    for module in (__file__, surgery.__file__, fill.__file__):
        digest.update(Path(module).read_bytes())
    return Path(root).expanduser() / digest.hexdigest()[:12]


def ensure_embedded_model(cfg=None, force: bool = False, say=print, root: Path = DEFAULT_ROOT,
                          recipe: Recipe = Recipe()) -> Path:
    """The embedded model's directory, building it first if it is missing (or `force`); `say` shows the build."""
    target = model_dir(root, recipe)
    if (target / "manifest.json").exists() and not force:
        return target
    say(f"building the embedded model into {target} (once; at most {recipe.max_train_seconds / 60 + 2:.0f} minutes)")
    build(target, recipe, say)
    return target


def build(target: Path, recipe: Recipe, say) -> dict:
    import torch

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rng = random.Random(recipe.seed)
    started = time.monotonic()
    examples = training_examples(rng, recipe)
    say(f"  {len(examples)} fill examples from {len(seed_entries(recipe.families))} seed families "
        f"({time.monotonic() - started:.0f} s)")
    tokenizer = train_tokenizer([p + c for p, c in examples], recipe)
    model = new_model(tokenizer, recipe)
    say(f"  tokenizer: {len(tokenizer)} tokens; model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    loss = train(model, tokenizer, examples, recipe, say)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_replay(tmp, examples)
    validity = sample_validity(model, tokenizer, rng, recipe.families)
    manifest = {"recipe": asdict(recipe), "examples": len(examples), "final_loss": loss, "sampled_validity": validity,
                "seconds": round(time.monotonic() - started, 1), "task": "fill"}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    say(f"  done in {manifest['seconds']:.0f} s; loss {loss:.3f}; sampled fills valid: "
        f"{validity['valid']}/{validity['sampled']} parse, {validity['builds']}/{validity['sampled']} build and run")
    return manifest


REPLAY_FILE = "replay.jsonl"


def write_replay(target: Path, examples: list[tuple[str, str]]) -> None:
    """Keep the training pairs with the model: the loop's updates replay them (the bootstrap distribution,
    validated mutants of every family), so fine-tuning on a run's own results does not narrow the model."""
    with open(target / REPLAY_FILE, "w") as f:
        for prompt, completion in examples:
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")


def replay_examples(model: str | None, rng: random.Random, n: int) -> list[tuple[dict, str]] | None:
    """`n` pairs from the bootstrap set kept with a model built here, as (prompt payload, completion); None
    when the model has none (then the task replays the seed corpus)."""
    path = Path(model or require_embedded_model()) / REPLAY_FILE
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    return [({"text": (item := json.loads(line))["prompt"]}, item["completion"]) for line in rng.sample(lines, min(n, len(lines)))]


def fill_tasks() -> dict[str, FillTask]:
    return {name: FillTask(dataset_info(name), 1, Transform()) for name, _ in _DATASETS}


def training_examples(rng: random.Random, recipe: Recipe) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: every seed and its valid mutants, each with sampled hyperparameters."""
    tasks = fill_tasks()
    names = [n for n, _ in _DATASETS]
    weights = [w for _, w in _DATASETS]
    examples = []
    seeds = seed_entries(recipe.families)
    mutants = valid_mutants(seeds, rng, attempts=int(recipe.mutants_per_family * 1.6), keep=recipe.mutants_per_family)
    for seed in seeds:
        prompts = {name: task.prompt_for(seed).text for name, task in tasks.items()}
        for region in [split(seed.code).region, *mutants[seed.name]]:
            for _ in range(2):  # each architecture with two hyperparameter draws
                prompt = prompts[rng.choices(names, weights)[0]]
                examples.append((prompt, completion_text(region, sample_hyperparameters(seed.code, rng))))
    rng.shuffle(examples)
    return examples


def sample_hyperparameters(code: str, rng: random.Random) -> dict:
    """Deliberately broad: the loop's fine-tuning is what learns which settings work."""
    adaptive = "Adam" in code
    lr = 10 ** rng.uniform(-3.7, -2.0) if adaptive else 10 ** rng.uniform(-2.7, -0.6)
    hp = {"lr": float(f"{lr:.2g}"), "momentum": rng.choice((0.5, 0.8, 0.9, 0.95)), "batch": rng.choice((16, 32, 64, 128))}
    if "'dropout'" in code or '"dropout"' in code:
        hp["dropout"] = round(rng.uniform(0.0, 0.5), 2)
    return hp


def train_tokenizer(texts: list[str], recipe: Recipe):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=recipe.vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, model_max_length=recipe.max_positions)


def new_model(tokenizer, recipe: Recipe):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads, num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.max_positions, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def train(model, tokenizer, examples, recipe: Recipe, say) -> float:
    """`recipe.train_steps` steps of AdamW with warm-up and cosine decay. Progress is the larger of the
    step fraction and the time fraction of `max_train_seconds`, so on a slow machine the schedule
    completes on time instead of running over. Returns the mean loss of the last steps."""
    import torch

    rng = random.Random(recipe.seed)
    encoded = encode_examples(tokenizer, examples, recipe.max_positions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    model.train()
    start, done, recent, next_report = time.monotonic(), 0, [], 0.1
    while True:
        for ids, labels, mask, _ in batches(encoded, recipe.batch_size, tokenizer.pad_token_id, rng):
            progress = max(done / recipe.train_steps, (time.monotonic() - start) / recipe.max_train_seconds)
            if progress >= 1:
                model.eval()
                return sum(recent) / len(recent) if recent else math.nan
            warm = min(1.0, progress / 0.05)
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            recent = (recent + [loss.item()])[-50:]
            done += 1
            if progress >= next_report:
                next_report += 0.1
                say(f"  {100 * progress:3.0f}% (step {done}, {time.monotonic() - start:.0f} s): "
                    f"loss {sum(recent) / len(recent):.3f}")


def sample_validity(model, tokenizer, rng: random.Random, families=None, n: int = 26, temperature: float = 0.7) -> dict:
    """Generate `n` fills (digits prompts over the seed families it learned) in one batch; count the working networks."""
    import torch

    task = fill_tasks()["digits"]
    seeds = seed_entries(families)
    prompts = [task.prompt_for(seeds[i % len(seeds)]) for i in range(n)]
    tokenizer.padding_side = "left"
    enc = tokenizer([p.text for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(rng.randrange(2**31))
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=temperature, max_new_tokens=320,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    specs = []
    for prompt, completion in zip(prompts, completions, strict=True):
        try:
            specs.append(task.parse(prompt, completion, Origin(task="fill")))
        except ParseFailure:
            continue
    answers = shape_check([s.code for s in specs], [s.hyperparameters.as_prm() for s in specs], (2, 1, 8, 8), 10) if specs else []
    return {"sampled": n, "temperature": temperature, "valid": len(specs), "builds": sum(a["ok"] for a in answers)}


def require_embedded_model(root: Path = DEFAULT_ROOT) -> Path:
    target = model_dir(root)
    if not (target / "manifest.json").exists():
        raise UserError("the embedded model is not built yet: run `nngpt bootstrap` first")
    return target
