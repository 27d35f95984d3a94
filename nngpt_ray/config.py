"""One pydantic model for every setting, loaded from YAML, overridable from the command line.

The defaults of `Config` *are* the embedded local preset (`configs/local.yaml` repeats them so the
file can be copied and edited). Unknown keys are errors that name the key, because a misspelled
setting that is silently ignored costs a whole run.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nngpt_ray.failures import ConfigError

Device = Literal["auto", "cpu", "cuda"]


class Section(BaseModel):
    """A config section. Every `Path` field is user-expanded (`~`) when it is set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="after")
    def _expand_user(self) -> Section:
        for name, value in self:
            if isinstance(value, Path) and str(value).startswith("~"):
                object.__setattr__(self, name, value.expanduser())
        return self


class RunConfig(Section):
    out_dir: Path = Path("runs")
    name: str | None = Field(None, description="run directory name; default: a timestamp")
    seed: int = 0
    final_test: int = Field(3, ge=0, description="at the end of a run, retrain this many best networks (by "
                                                 "validation accuracy) once and score them on the test split")


class DataConfig(Section):
    dataset: str = "digits"
    data_dir: Path = Path("~/.cache/nngpt/data")
    download: bool = Field(False, description="let torchvision download a dataset that is missing")
    resize: int | None = Field(None, ge=4, le=512, description="default square resize; None keeps the native size")
    normalize: bool = True
    hflip: bool = False
    max_train: int | None = Field(None, ge=10, description="use only this many training images (quick runs)")
    val_fraction: float | None = Field(None, gt=0, lt=1, description="share of the training split held out for "
                                                                      "validation; None: the dataset's default")


class TrainConfig(Section):
    epochs: int = Field(2, ge=1, le=1000)
    device: Device = "auto"
    threads: int = Field(1, ge=1, le=256, description="torch threads inside each candidate process")


class SandboxConfig(Section):
    timeout_s: float = Field(300, gt=0, description="wall-clock limit per candidate, start-up included")
    stall_s: float = Field(60, ge=0, description="kill a candidate that takes no new batch and finishes no phase "
                                                 "for this long (0: off)")
    memory_mb: int = Field(2048, ge=64, description="memory the candidate may use on top of torch itself")
    max_processes: int = Field(64, ge=1, description="processes and threads the candidate may start")
    max_open_files: int = Field(256, ge=16)
    max_file_mb: int = Field(64, ge=1, description="largest single file the candidate may write")
    max_scratch_mb: int = Field(256, ge=1, description="total size of its scratch directory")
    max_output_kb: int = Field(64, ge=1, description="tail of stdout/stderr kept for the error text")
    static_check: bool = Field(True, description="refuse unsafe imports and calls before running anything")
    audit_hook: bool = Field(True, description="runtime guard against files, sockets, processes, ctypes")
    isolate_network: bool = Field(True, description="own network namespace where the node allows it")
    use_cgroups: bool = Field(True, description="own cgroup (pids, memory) where the node allows it")
    scratch_root: Path | None = Field(None, description="where scratch directories go; default: system temp")


class LLMConfig(Section):
    model: str | None = Field(None, description="HF model id or local directory (`~` expanded); None = embedded default")
    gguf_file: str | None = Field(None, description="file name of a GGUF checkpoint inside `model`")
    engine: Literal["transformers", "vllm"] = "transformers"
    device: Device = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0, ge=0)
    tensor_parallel: int = Field(1, ge=1)
    threads: int = Field(1, ge=0, description="torch threads of a CPU engine; 0: every core of the node")
    batch_size: int = Field(6, ge=1, description="prompts per generation call")
    requests_in_flight: int = Field(1, ge=1, description="generation calls the controller keeps open at once (one "
                                                         "per replica keeps every replica busy)")
    max_new_tokens: int = Field(320, ge=8)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    max_lora_rank: int = Field(16, ge=1, description="vLLM: largest LoRA rank it must accept")
    max_model_len: int | None = Field(None, ge=64, description="vLLM: context length (None: the model's)")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env of the LLM deployment alone (vLLM "
                                                                 "pins its own torch: give it its own environment)")

    @field_validator("model")
    @classmethod
    def _expand_model_path(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser()) if value and value.startswith("~") else value

    def is_local(self) -> bool:
        """`model` names a path on this machine, not a Hugging Face id."""
        return bool(self.model) and (self.model.startswith(("/", "./", "../")) or Path(self.model).exists())


class TaskConfig(Section):
    kind: Literal["fill", "code", "hpo"] = "fill"
    examples: int = Field(1, ge=0, le=8, description="few-shot examples in a `code` prompt")
    reprompt: bool = Field(True, description="one more try with the diagnostic when parsing fails")
    families: list[str] | None = Field(None, description="seed families used as references and examples "
                                                          "(default: all); narrows the search space")

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str] | None) -> list[str] | None:
        from nngpt_ray.corpus import seed_names

        if value is None:
            return value
        if not value:
            raise ValueError("name at least one family, or leave it unset for all")
        unknown = [name for name in value if name not in seed_names()]
        if unknown:
            raise ValueError(f"unknown seed family {', '.join(unknown)}; available: {', '.join(seed_names())}")
        return value


class TrainersConfig(Section):
    count: int = Field(2, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0, ge=0)
    max_retries: int = Field(2, ge=0, description="re-queues of a candidate whose trainer died")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per trainer (e.g. "
                                                                          "{gpu_node: 1}) to place trainers on some nodes")


class DedupConfig(Section):
    threshold: float = Field(0.995, gt=0, le=1, description="MinHash-Jaccard above which a candidate is a near-duplicate"
                             " (fill candidates share their reference's whole skeleton and differ in a few tokens, "
                             "hence high; ~0.9 for whole-module generation)")
    num_perm: int = Field(512, ge=16, description="MinHash permutations: more resolve higher thresholds")
    shingle: int = Field(3, ge=1, description="code tokens per shingle")


class PredictorConfig(Section):
    kind: Literal["curve", "learned", "none"] = Field("curve", description="curve: the learning-curve rule; learned: "
                                                      "gradient boosting on the network's features and early epochs")
    model_file: Path | None = Field(None, description="learned: a model from `nngpt predictor fit` (None: fitted "
                                                      "from the run's own results once it has enough)")
    refit_every: int = Field(25, ge=0, description="learned: refit from the run's results every this many (0: never)")
    quantile: float = Field(0.9, gt=0.5, lt=1, description="learned: the upper estimate a stop decision looks at")
    min_epochs: int = Field(1, ge=1, description="epochs before any stop decision")
    chance_factor: float = Field(2.0, ge=1, description="stop when accuracy < chance x this factor")
    margin: float = Field(0.5, ge=0, le=1, description="stop when the projected (curve) or upper (learned) final "
                                                       "accuracy < best x margin")


class LearnerConfig(Section):
    kind: Literal["sft", "grpo", "sft+grpo"] = Field("sft+grpo", description="sft: supervised on accepted results; grpo: "
                                                     "policy gradient on groups of completions rewarded by the pipeline")
    every_k: int = Field(8, ge=1, description="accepted results between two LoRA updates")
    max_failures: int = Field(3, ge=1, description="failed updates in a row before learning is turned off")
    accept_threshold: float = Field(0.8, ge=0, le=1, description="best accuracy an accepted result needs")
    max_examples: int = Field(96, ge=1, description="accepted results (distinct networks) used per update")
    selection: Literal["rank", "recent"] = Field("rank", description="which accepted results an update learns from: "
                                                 "the best (weighted by rank) or the most recent")
    replay_ratio: float = Field(0.5, ge=0, lt=1, description="share of each update's examples replayed from the "
                                                             "seed corpus, so the model does not narrow to its own")
    continue_adapter: bool = Field(False, description="start each SFT update from the active adapter instead of a "
                                                      "fresh one")
    gate_prompts: int = Field(12, ge=0, description="fixed prompts sampled with a new adapter before it goes live; 0: "
                                                    "no gate")
    gate_tolerance: float = Field(0.1, ge=0, le=1, description="a new adapter's novel yield on the gate prompts may "
                                                               "fall this far below the active one's")
    group_size: int = Field(3, ge=2, description="GRPO: completions per prompt (a group needs two to compare); a "
                                                 "divisor of llm.batch_size keeps every group whole")
    max_groups: int = Field(32, ge=1, description="GRPO: most recent complete groups per update")
    grpo_kl: float = Field(0.04, ge=0, description="GRPO: weight of the KL penalty to the base model")
    grpo_clip: float = Field(0.2, gt=0, lt=1, description="GRPO: clipping of the probability ratio")
    grpo_steps: int = Field(2, ge=1, description="GRPO: passes over the groups per update")
    grpo_lr: float = Field(1e-3, gt=0)
    novelty_weight: float = Field(0.5, ge=0, description="GRPO: reward for how unlike earlier networks a trained one is")
    epochs: int = Field(4, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(8, ge=1)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="None: the attention and MLP projections")
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0, ge=0)
    threads: int = Field(1, ge=1)
    quantization: Literal["none", "4bit"] = Field("none", description="4bit: QLoRA (bitsandbytes NF4, double "
                                                  "quantization, bf16 compute, gradient checkpointing, paged AdamW)")

    @model_validator(mode="after")
    def _quantization_can_work(self) -> LearnerConfig:
        if self.quantization == "4bit":
            import importlib.util

            if self.num_gpus <= 0:
                raise ValueError("learner.quantization 4bit needs a GPU (learner.num_gpus > 0): bitsandbytes NF4 is "
                                 "CUDA-only")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ValueError("learner.quantization 4bit needs bitsandbytes (pip install 'nngpt-ray[gpu]')")
        return self

    @property
    def sft(self) -> bool:
        return self.kind in ("sft", "sft+grpo")

    @property
    def grpo(self) -> bool:
        return self.kind in ("grpo", "sft+grpo")


class LoopConfig(Section):
    cycles: int = Field(4, ge=1, description="adapter versions to generate with (v0 = base model)")
    candidates_per_cycle: int = Field(16, ge=1, description="new (unique, trainable) candidates per cycle")
    max_generations_per_cycle: int = Field(160, ge=1, description="stop a cycle's generation here even if short")
    max_candidates: int | None = Field(None, ge=1, description="completions generated, whole run")
    max_sent: int | None = Field(None, ge=1, description="candidates sent to a trainer, whole run (comparisons "
                                                         "budget search methods in this unit)")
    max_minutes: float | None = Field(None, gt=0)
    queue_size: int = Field(4, ge=1, description="generated candidates waiting for a trainer")
    temperatures: list[float] = Field([], description="sampling temperatures each generation batch chooses among, "
                                      "by Thompson sampling on novel yield (new / generated) in the current cycle, "
                                      "e.g. [0.4, 0.6, 0.8]; empty: always llm.temperature (the default: with the "
                                      "embedded model 0.6 gave the best yield and exploring the others cost more "
                                      "than it found)")

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(t <= 0 for t in value):
            raise ValueError("temperatures must be above 0 (greedy decoding gives one completion per prompt)")
        return sorted(set(value))


class CorpusConfig(Section):
    path: str | None = Field(None, description="folder of a corpus that outlives the run (networks and results "
                             "imported from LEMUR, accepted networks of earlier runs): its networks are references "
                             "for prompts, and the run adds its accepted networks to it at the end")


class RagConfig(Section):
    store: str | None = Field(None, description="NN-RAG block store (`nngpt rag build --out DIR`): the `code` "
                              "task shows k of its blocks in each prompt")
    k: int = Field(2, ge=1, le=8, description="blocks per prompt")
    max_lines: int = Field(80, ge=5, description="only blocks this short (prompts must fit small models' context)")

    @field_validator("store")
    @classmethod
    def _expand_store(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser()) if value else value


class RayConfig(Section):
    address: str | None = Field(None, description="None: join RAY_ADDRESS if set, else start local Ray")
    namespace: str = "nngpt"
    num_cpus: int | None = Field(None, description="local Ray only: CPUs to advertise")
    dashboard: bool | None = Field(None, description="local Ray only: start the dashboard (None: if installed)")


class Config(Section):
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    sandbox: SandboxConfig = SandboxConfig()
    llm: LLMConfig = LLMConfig()
    task: TaskConfig = TaskConfig()
    trainers: TrainersConfig = TrainersConfig()
    dedup: DedupConfig = DedupConfig()
    predictor: PredictorConfig = PredictorConfig()
    learner: LearnerConfig = LearnerConfig()
    loop: LoopConfig = LoopConfig()
    corpus: CorpusConfig = CorpusConfig()
    rag: RagConfig = RagConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _rag_needs_the_code_task(self) -> Config:
        if self.rag.store and self.task.kind != "code":
            raise ValueError(f"rag.store: retrieval puts blocks into `code` prompts; task.kind is {self.task.kind!r}")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def preflight(self) -> None:
        """Checks that need the file system, done before anything starts. Raises ConfigError."""
        llm = self.llm
        if llm.is_local():
            model = Path(llm.model)
            if not model.exists():
                raise ConfigError(f"llm.model: {model} does not exist")
            if llm.gguf_file and not (model / llm.gguf_file).is_file():
                raise ConfigError(f"llm.gguf_file: {model / llm.gguf_file} does not exist")
        if self.rag.store and not (Path(self.rag.store) / "blocks.sqlite").is_file():
            raise ConfigError(f"rag.store: {self.rag.store} holds no block store; build one with "
                              f"`nngpt rag build --out {self.rag.store}`")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read YAML (or the defaults), apply `key.sub=value` overrides, validate. Raises ConfigError."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).expanduser().read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {_one_line(err)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    for item in overrides or []:
        _apply_override(raw, item)
    return validate_config(raw, source)


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """`cfg` with `section.key=value` overrides applied and validated. Raises ConfigError."""
    raw = cfg.model_dump(mode="json")
    for item in overrides:
        _apply_override(raw, item)
    return validate_config(raw, "overrides")


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err, Config)}") from None


def describe_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    """Turn pydantic's report into short lines naming each field's dotted path."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            known = _known_keys(model, e["loc"][:-1])
            hint = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known keys: {', '.join(known)})"
            lines.append(f"unknown key '{path}'{suggestion}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"'{path}': {e['msg']}{shown}")
    return "; ".join(lines)


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}' must look like section.key=value")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{item}': '{part}' is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
