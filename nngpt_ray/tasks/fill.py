"""`fill`: the compact task for small models (NNGPT's masked-layer format).

The prompt shows a reference network from the corpus with the layer definitions of `Net.__init__`
masked; the model writes those lines and a hyperparameter line. Everything else of the module comes
from the reference, so a small model only has to get ~100 tokens right instead of a whole file:

    ### task: fill
    ### dataset: digits, input 1x8x8, 10 classes
    <reference module, docstring and comments removed, region replaced by <FILL>>
    ### fill:
            self.device = device
            self.features = nn.Sequential(...)
    ### hyperparameters: {"lr": 0.05, "momentum": 0.9, "batch": 32}
    ### end
"""

from __future__ import annotations

import ast
import json
import random
import re

from nngpt_ray.corpus import CorpusEntry
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure, check_code
from nngpt_ray.source import parse_tree
from nngpt_ray.spec import DEFAULT_HYPERPARAMETERS, CandidateSpec, Origin
from nngpt_ray.surgery import NoFillRegion, normalize_region, split
from nngpt_ray.tasks.base import Prompt, Task, weighted_pick

FILL = "### fill:\n"
HP = "### hyperparameters:"
END = "### end"
_HP_COMMENT = re.compile(r"^# hyperparameters: .*$\n?", re.M)
_DOCSTRING = re.compile(r'\A\s*(""".*?"""|\'\'\'.*?\'\'\')\s*\n', re.S)


class FillTask(Task):
    kind = "fill"
    stop = (END,)

    def prompt(self, pool: list[CorpusEntry], rng: random.Random) -> Prompt:
        usable = [e for e in pool if _has_region(e.code)]
        reference = weighted_pick(usable, rng)[0]
        return self.prompt_for(reference)

    def prompt_for(self, reference: CorpusEntry) -> Prompt:
        text = f"### task: fill\n### dataset: {self.dataset_line()}\n{split_compact(reference.code)}{FILL}"
        return Prompt(task=self.kind, parents=(reference.name,), text=text,
                      context={"reference": reference.code, "family": reference.family})

    def parse(self, prompt: Prompt, completion: str, origin: Origin) -> CandidateSpec:
        region, hyperparameters = read_completion(completion)
        try:
            parts = split(prompt.context["reference"])
        except NoFillRegion as err:
            raise ParseFailure(FailureKind.PARSE, f"reference has no fill region: {err}") from None
        code = with_hyperparameter_comment(parts.with_region(region), hyperparameters)
        parsed = check_code(code)
        for name in parsed.declared or ():
            hyperparameters.setdefault(name, DEFAULT_HYPERPARAMETERS.get(name, 0.0))
        try:
            return self.spec(parsed.code, hyperparameters, origin)
        except ValueError as err:
            raise ParseFailure(FailureKind.PARSE, f"bad hyperparameters: {err}") from None

    def reprompt(self, prompt: Prompt, completion: str, diagnostic: str) -> Prompt:
        # A small model cannot read a diagnostic; its retry is a fresh sample of the same prompt.
        return prompt

    def example(self, prompt: Prompt, spec: CandidateSpec) -> tuple[dict, str]:
        return prompt.payload(), completion_for(spec.code, spec.hyperparameters.as_prm())


def read_completion(completion: str) -> tuple[str, dict]:
    """(region, hyperparameters) from a completion. Raises ParseFailure(parse)."""
    body = completion.split(END, 1)[0]
    region, sep, hp_text = body.partition(HP)
    if not region.strip():
        raise ParseFailure(FailureKind.PARSE, "the completion holds no layer definitions")
    if not sep:
        raise ParseFailure(FailureKind.PARSE, f"the completion has no '{HP}' line")
    try:
        hyperparameters = json.loads(hp_text.strip().splitlines()[0] if hp_text.strip() else "")
    except (ValueError, IndexError):
        raise ParseFailure(FailureKind.PARSE, f"the hyperparameter line is not JSON: {hp_text.strip()[:80]!r}") from None
    if not isinstance(hyperparameters, dict):
        raise ParseFailure(FailureKind.PARSE, "the hyperparameter line is not a JSON object")
    hyperparameters.pop("epochs", None)
    return normalize_region(region), hyperparameters


def completion_for(code: str, hyperparameters: dict) -> str:
    """The completion that would have produced `code` (the target of supervised fine-tuning)."""
    return completion_text(split(code).region, hyperparameters)


def completion_text(region: str, hyperparameters: dict) -> str:
    hp = {k: v for k, v in hyperparameters.items() if k != "epochs"}
    return f"{normalize_region(region)}{HP} {json.dumps(hp)}\n{END}"


def compact(code: str) -> str:
    """The reference as the prompt shows it: one line naming the helper modules it defines (with
    their signatures), then `class Net` without learn(). Imports, docstrings, comments, helper bodies,
    supported_hyperparameters() and learn() are the same in every variant of a family; they come back
    from the reference when the module is assembled, and leaving them out cuts the prompt by half."""
    tree = parse_tree(code)
    helpers, net = [], None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Net":
            net = node
        elif isinstance(node, ast.ClassDef):
            init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            helpers.append(f"{node.name}({_signature(init)})" if init else f"{node.name}()")
        elif isinstance(node, ast.FunctionDef) and node.name != "supported_hyperparameters":
            helpers.append(f"{node.name}({_signature(node, skip_self=False)})")
    if net is None:
        raise NoFillRegion("no class Net")
    lines = code.splitlines(keepends=True)
    learn = next((f for f in net.body if isinstance(f, ast.FunctionDef) and f.name == "learn"), None)
    end = (learn.lineno - 1 - len(learn.decorator_list)) if learn else net.end_lineno
    body = "".join(lines[net.lineno - 1:end])
    if learn and learn is not net.body[-1]:
        body += "".join(lines[learn.end_lineno:net.end_lineno])
    body = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("#"))
    header = f"### helpers: {', '.join(helpers)}\n" if helpers else ""
    return header + re.sub(r"\n{3,}", "\n\n", body).strip("\n") + "\n"


def _signature(fn: ast.FunctionDef, skip_self: bool = True) -> str:
    args = fn.args.args[1:] if skip_self else fn.args.args
    defaults = [None] * (len(args) - len(fn.args.defaults)) + list(fn.args.defaults)
    return ", ".join(a.arg if d is None else f"{a.arg}={ast.unparse(d)}" for a, d in zip(args, defaults))


def with_hyperparameter_comment(code: str, hyperparameters: dict) -> str:
    """Record the hyperparameters in the module itself, as the seed files do."""
    line = f"# hyperparameters: {json.dumps(hyperparameters)}\n"
    if _HP_COMMENT.search(code):
        return _HP_COMMENT.sub(line.replace("\\", "\\\\"), code, count=1)
    doc = _DOCSTRING.match(code)
    cut = doc.end() if doc else 0
    return code[:cut] + line + code[cut:]


def split_compact(code: str) -> str:
    """compact(code) with its fill region masked."""
    view = compact(code)
    net_at = view.index("class Net")
    return view[:net_at] + split(view[net_at:]).masked()


def _has_region(code: str) -> bool:
    try:
        split(code)
        return True
    except NoFillRegion:
        return False
