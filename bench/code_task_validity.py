"""The `code` task with a real code LLM: valid rate before and after the parser's near-miss repairs, and
with NN-RAG retrieval in the prompt against without it.

    python bench/code_task_validity.py --model ~/.cache/nngpt/qwen2.5-coder-0.5b-instruct \
        --gguf qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --n 12 [--rag runs/rag] --out runs/bench-code-validity

1. Generates `--n` completions for `code`-task prompts built from the seed corpus (seeded), once, and keeps
   them in `completions.jsonl` (a rerun reuses them: generation is the slow part on CPU). With `--rag`, the
   same prompts (the same example networks) with `--k` blocks of the store in them (`completions-rag.jsonl`).
2. Parses every plain completion twice, without and with the repairs (one nn.Module under another name
   renamed to Net, a dict of defaults from supported_hyperparameters(), a constructor with its own
   signature adapted, missing train_setup/learn added): the same completions, so the difference is the
   parser's. The retrieval completions are parsed with the repairs.
3. Builds each parsed network in a throwaway process and runs one forward pass on digits' input shape, and
   counts the new ones: built, and neither a duplicate nor a near duplicate (the loop's dedup settings) of a
   seed or of an earlier completion of the same set.

Prints per set: parsed (contract and safety hold), built (maps the input to logits), new (novel yield).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from pathlib import Path


def generate(prompts, path: Path, args) -> list[dict]:
    done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if len(done) >= len(prompts):
        return done[:len(prompts)]
    from nngpt_ray.llm import render
    from nngpt_ray.serve.engines import make_engine
    from nngpt_ray.serve.engines.base import Sampling

    engine = make_engine("transformers", model=str(Path(args.model).expanduser()), gguf_file=args.gguf,
                         threads=args.threads or os.cpu_count() or 1)
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=0.95, seed=0)
    with path.open("a") as f:
        for start in range(len(done), len(prompts), args.batch):
            batch = prompts[start:start + args.batch]
            t = time.monotonic()
            generated = engine.generate([render(p.payload(), engine.tokenizer) for p in batch], sampling, None)
            seconds = time.monotonic() - t
            for text in generated.texts:
                row = {"text": text, "seconds": seconds / len(batch), "tokens": generated.tokens / len(batch)}
                f.write(json.dumps(row) + "\n")
                done.append(row)
            print(f"{path.name}: {len(done)}/{len(prompts)} completions, {generated.tokens / seconds:.1f} tokens/s",
                  flush=True)
    return done


def evaluate(task, prompts, completions, repair: bool, info) -> Counter:
    from nngpt_ray.config import DedupConfig
    from nngpt_ray.corpus import seed_entries
    from nngpt_ray.dedup import Deduplicator
    from nngpt_ray.mutants import shape_check
    from nngpt_ray.parsing import ParseFailure
    from nngpt_ray.spec import Origin

    counts: Counter = Counter()
    specs = []
    for prompt, row in zip(prompts, completions, strict=True):
        try:
            specs.append(task.parse(prompt, row["text"], Origin(task="code"), repair=repair))
            counts["parsed"] += 1
        except ParseFailure as failure:
            counts[f"failed: {failure.kind}"] += 1
    if not specs:
        return counts
    answers = shape_check([s.code for s in specs], [s.hyperparameters.as_prm() | {"batch": 2} for s in specs],
                          (2, info.channels, info.height, info.width), info.classes)
    dedup_cfg = DedupConfig()
    dedup = Deduplicator(dedup_cfg.threshold, dedup_cfg.num_perm, dedup_cfg.shingle)
    for seed in seed_entries():
        dedup.remember(f"seed:{seed.name}", seed.code)
    for i, (spec, answer) in enumerate(zip(specs, answers, strict=True)):
        if not answer["ok"]:
            counts["failed: forward"] += 1
            continue
        counts["built"] += 1
        verdict = dedup.check(str(i), spec.code)
        if verdict.kind == "new":
            dedup.remember(str(i), spec.code)
            counts["new"] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--gguf")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="0: every core")
    ap.add_argument("--max-new-tokens", type=int, default=900)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--rag", help="a block store (nngpt rag build --out DIR): also generate with retrieval")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-code-validity")
    args = ap.parse_args()

    from nngpt_ray.corpus import seed_entries
    from nngpt_ray.datasets import dataset_info
    from nngpt_ray.spec import Transform
    from nngpt_ray.tasks.code import CodeTask

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = dataset_info("digits")
    task = CodeTask(info, 2, Transform(), examples=1)
    rng = random.Random(0)
    prompts = [task.prompt(seed_entries(), rng) for _ in range(args.n)]
    plain = generate(prompts, out / "completions.jsonl", args)
    sets = {"plain, no repairs": evaluate(task, prompts, plain, False, info),
            "plain, repairs": evaluate(task, prompts, plain, True, info)}
    if args.rag:
        from nngpt_ray.rag import prompt_blocks

        rag_task = CodeTask(info, 2, Transform(), examples=1)
        rag_task.use_blocks(prompt_blocks(Path(args.rag)), args.k)
        seeds = {s.name: s for s in seed_entries()}  # the same example networks as the plain prompts
        rag_prompts = [rag_task.prompt(seed_entries(), random.Random(i), examples=[seeds[p.parents[0]]])
                       for i, p in enumerate(prompts)]
        with_rag = generate(rag_prompts, out / "completions-rag.jsonl", args)
        sets[f"retrieval k={args.k}, repairs"] = evaluate(rag_task, rag_prompts, with_rag, True, info)
    n = args.n
    print(f"\n{n} completions per set, code task on digits ({Path(args.model).name}, temperature "
          f"{args.temperature}, {args.max_new_tokens} new tokens at most)")
    for label, counts in sets.items():
        print(f"  {label:28s} parsed {counts['parsed']:2d}/{n} ({100 * counts['parsed'] / n:3.0f}%)  built "
              f"{counts['built']:2d}/{n} ({100 * counts['built'] / n:3.0f}%)  new {counts['new']:2d}/{n} "
              f"({100 * counts['new'] / n:3.0f}%)   "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k.startswith("failed")))
    (out / "result.json").write_text(json.dumps({k: dict(v) for k, v in sets.items()} | {"n": n}, indent=2))


if __name__ == "__main__":
    main()
