"""`nngpt compare --mode hpo`: one-shot LLM hyperparameters against TPE after 1, 5 and 20 trials and
against a network's own defaults, on networks the LLM never learned from.

1. The seed families are split (seeded): `held_out` families are for evaluation only; the others, each
   with valid mutants of itself, are the training networks.
2. Records: random search, `per_network` settings for each training network, in the sandbox, into
   `<out>/records` (the kind of record any method leaves: the hpo task learns from all of them).
3. The learner fine-tunes the `hpo` task on the best setting per training network (a LoRA adapter).
4. Each held-out network is trained with its defaults, with the base model's one-shot answer, with the
   fine-tuned model's one-shot answer (greedy), and searched by TPE for 20 trials (`<out>/tpe-<network>`).
5. Per network, regret is the best accuracy any of these found minus the method's; the table gives the
   mean accuracy and mean regret of each method. Every number is validation accuracy.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from nngpt_ray import comparison, datasets, outcomes
from nngpt_ray.config import Config, with_overrides
from nngpt_ray.corpus import CorpusEntry, seed_entries
from nngpt_ray.failures import UserError
from nngpt_ray.mutants import valid_mutants
from nngpt_ray.parsing import ParseFailure
from nngpt_ray.rundir import RunDir
from nngpt_ray.search import SearchSpace
from nngpt_ray.spec import CandidateSpec, Hyperparameters, Origin, Transform
from nngpt_ray.store import Store
from nngpt_ray.surgery import split
from nngpt_ray.tasks.hpo import HpoTask, examples_from

TPE_AT = (1, 5, 20)


def split_families(cfg: Config, held_out: int) -> tuple[list[str], list[str]]:
    names = sorted(cfg.task.families or [s.name for s in seed_entries()])
    if len(names) < held_out + 2:
        raise UserError(f"--mode hpo holds out {held_out} families and learns from the rest: it needs at least "
                        f"{held_out + 2} seed families, the config allows {len(names)}")
    random.Random(cfg.run.seed).shuffle(names)
    return sorted(names[:held_out]), sorted(names[held_out:])


def training_networks(cfg: Config, families: list[str], mutants: int) -> dict[str, CorpusEntry]:
    """Each training family's seed and up to `mutants` valid mutants of it (built and run once, on this
    dataset's input shape, in a throwaway process)."""
    info = datasets.dataset_info(cfg.data.dataset)
    seeds = seed_entries(families)
    regions = valid_mutants(seeds, random.Random(cfg.run.seed), attempts=mutants * 4, keep=mutants,
                            in_shape=(2, *info.shape), classes=info.classes)
    networks = {}
    for seed in seeds:
        networks[seed.name] = seed
        parts = split(seed.code)
        for i, region in enumerate(regions[seed.name]):
            networks[f"{seed.name}-m{i}"] = dataclasses.replace(seed, name=f"{seed.name}-m{i}",
                                                                code=parts.before + region + parts.after)
    return networks


def compare_hpo(cfg: Config, out: Path, *, held_out: int = 6, per_network: int = 5, mutants: int = 2,
                tpe_trials: int = 20, say=print) -> dict[str, Any]:
    from nngpt_ray.actors.driver import with_embedded_model
    from nngpt_ray.actors.launcher import check_placeable, init_ray, store_only
    from nngpt_ray.baselines.compare import finished, mark_finished
    from nngpt_ray.baselines.tune import search

    datasets.from_config(cfg.data)
    held, trained = split_families(cfg, held_out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = with_overrides(cfg, [f"run.out_dir={out}", "run.final_test=0", "task.kind=hpo"])
    cfg = with_embedded_model(cfg, out, say)  # the learner and the deployment read one copy, as a run's do
    init_ray(cfg)
    check_placeable(cfg, say=say)

    networks = training_networks(cfg, trained, mutants)
    records = RunDir(out / "records").create()
    if not finished(records):
        say(f"records: {per_network} random settings for each of {len(networks)} training networks "
            f"({', '.join(trained)} and mutants)")
        records.prepare_store(cfg)
        with store_only(records):
            search(cfg, records, "random", cfg.run.seed, per_network, SearchSpace.of_networks(networks, cfg.data.dataset),
                   every_network=True)
        mark_finished(records)

    task = HpoTask(datasets.dataset_info(cfg.data.dataset), cfg.train.epochs,
                   Transform(resize=cfg.data.resize, normalize=cfg.data.normalize, hflip=cfg.data.hflip))
    with Store(records.store, readonly=True) as store:
        examples = examples_from(store.table("candidates"), task, per_network=1)
    say(f"fine-tuning the hpo task on the best setting of {len(examples)} training networks")
    answers = _one_shot_answers(cfg, out, task, examples, [seed_entries([name])[0] for name in held], say)

    evaluations = RunDir(out / "oneshot").create()
    evaluations.prepare_store(cfg)
    per_network_rows = []
    for seed in seed_entries(held):
        row = {"network": seed.name}
        for method, hyperparameters in (("defaults", seed.hyperparameters), ("llm_base", answers["base"][seed.name]),
                                        ("llm_tuned", answers["tuned"][seed.name])):
            row[method] = _evaluate_once(cfg, evaluations, method, seed, hyperparameters, task)
        tpe = RunDir(out / f"tpe-{seed.name}").create()
        if not finished(tpe):
            say(f"{seed.name}: TPE, {tpe_trials} trials")
            tpe.prepare_store(cfg)
            with store_only(tpe):
                search(cfg, tpe, "tpe", cfg.run.seed, tpe_trials, SearchSpace.of_network(seed.code, cfg.data.dataset),
                       code=seed.code)
            mark_finished(tpe)
        with Store(tpe.store, readonly=True) as store:
            curve = comparison.read_run(store, "tpe", cfg.run.seed).curve_sent
        for k in TPE_AT:
            row[f"tpe_{k}"] = curve[min(k, len(curve)) - 1] if curve else 0.0
        row["tpe_all"] = curve[-1] if curve else 0.0
        per_network_rows.append(row)
    return comparison.hpo_summary(per_network_rows, cfg.data.dataset, cfg.train.epochs, held, trained, len(examples),
                                  answers["parse_failures"])


def _one_shot_answers(cfg: Config, out: Path, task: HpoTask, examples, held: list[CorpusEntry], say) -> dict:
    """Greedy one-shot hyperparameters for each held-out network, from the base model and from the model
    fine-tuned on `examples` (an adapter trained by the learner actor, served by the LLM deployment)."""
    import ray
    from ray import serve

    from nngpt_ray.actors.learner import LearnerActor
    from nngpt_ray.serve.app import deploy

    app = f"nngpt-llm-hpo-{out.name}"
    learner = LearnerActor.options(num_cpus=cfg.learner.num_cpus, num_gpus=cfg.learner.num_gpus).remote(
        cfg.model_dump(mode="json"))
    try:
        adapter_dir = out / "adapters" / "hpo-v1"
        update = None if (adapter_dir / "adapter_config.json").exists() else \
            learner.update.remote(str(adapter_dir), examples=examples)  # trains while the deployment starts
        serve.start(proxy_location="Disabled")
        handle = deploy(cfg, app)
        if update is not None:
            ray.get(update)
        adapter = {"name": f"{app}-v1", "version": 1, "path": str(adapter_dir)}
        prompts = [task.prompt_for(n) for n in held]
        greedy = {"max_new_tokens": 120, "temperature": 0.0, "stop": list(task.stop)}
        answers: dict[str, Any] = {"parse_failures": {}}
        for name, chosen in (("base", None), ("tuned", adapter)):
            texts = handle.generate.remote([p.payload() for p in prompts], greedy, chosen).result()["texts"]
            answers[name], failures = {}, 0
            for network, prompt, text in zip(held, prompts, texts, strict=True):
                try:
                    answers[name][network.name] = task.parse(prompt, text, Origin(task="hpo")).hyperparameters.as_prm()
                except ParseFailure as failure:
                    answers[name][network.name] = {"invalid": failure.diagnostic[:200]}
                    failures += 1
            answers["parse_failures"][name] = failures
            say(f"one-shot answers of the {name} model: {len(held) - failures}/{len(held)} parse")
        return answers
    finally:
        ray.kill(learner)
        serve.delete(app)


def _evaluate_once(cfg: Config, run: RunDir, method: str, network: CorpusEntry, hyperparameters: dict,
                   task: HpoTask) -> float:
    """Train `network` once with `hyperparameters` (an unparsable answer scores 0, as a failed trial does);
    recorded in `run`'s store with `method`. Returns its best validation accuracy."""
    from nngpt_ray.trainer import Trainer

    store = Store(run.store)
    try:
        if "invalid" in hyperparameters:
            return 0.0
        values = {k: v for k, v in hyperparameters.items() if k != "epochs"}
        spec = CandidateSpec(code=network.code, hyperparameters=Hyperparameters(**values, epochs=cfg.train.epochs),
                             transform=task.transform, dataset=cfg.data.dataset,
                             origin=Origin(task="hpo", cycle=0, sample=f"{method}-{network.name}"))
        row = store.candidate(spec.id)
        if row is None or row["stage"] != "finished":
            store.add_candidate(spec.id, task="hpo", method=method, cycle=0, spec=spec)
            core = Trainer(cfg, owner=f"hpo@{run.root.name}")
            try:
                attempt = store.start_attempt(spec.id, "hpo")
                result = core.train(spec)
            finally:
                core.close()
            store.complete(result, attempt)
            row = store.candidate(spec.id)
        return row["best_accuracy"] if outcomes.is_trained(row["status"]) and row["best_accuracy"] else 0.0
    finally:
        store.close()
