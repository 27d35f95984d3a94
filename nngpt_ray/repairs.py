"""Near-misses of the module contract that a real code LLM makes, repaired where the intent is unambiguous.

Measured with Qwen2.5-Coder-0.5B on the `code` task: plausible CNNs named `ConvClassifier` with their
own constructor (`__init__(self, num_classes=10)`), a `supported_hyperparameters()` that returns a dict of
defaults, no `train_setup`/`learn`, and (half of 12 completions) a new Net built from the example
network's helpers (`Fire`, `conv_bn`) by name, without their definitions. Each repair here is syntactic, names what it did, and leaves anything
ambiguous (two candidate network classes, a required constructor argument we cannot map) to the contract
check and its diagnostic. Nothing is executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from nngpt_ray.contract import INIT_PARAMS
from nngpt_ray.source import parse_tree

_CLASSES_ARG = ("num_classes", "n_classes", "classes", "output_dim", "out_features", "num_outputs", "output_size",
                "out_dim", "num_labels")
_CHANNELS_ARG = ("in_channels", "input_channels", "in_ch", "channels", "num_channels", "image_channels", "in_chans",
                 "input_dim", "in_dim")
_MODULE_BASES = ("nn.Module", "torch.nn.Module", "Module")
TRAIN_SETUP = '''def train_setup(self, prm):
    self.criteria = nn.CrossEntropyLoss()
    self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])
'''
LEARN = '''def learn(self, train_data):
    self.train()
    device = next(self.parameters()).device
    for inputs, labels in train_data:
        inputs, labels = inputs.to(device), labels.to(device)
        self.optimizer.zero_grad()
        loss = self.criteria(self(inputs), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), 3)
        self.optimizer.step()
'''


@dataclass
class Repaired:
    code: str
    notes: list[str] = field(default_factory=list)
    defaults: dict[str, float] = field(default_factory=dict)  # from a supported_hyperparameters() dict


def repair(code: str, sources: tuple[str, ...] = ()) -> Repaired:
    """`code` with the unambiguous contract near-misses fixed; `sources`: the networks and blocks its
    prompt showed, whose helpers it may use by name. Code that does not parse comes back as is."""
    try:
        module = cst.parse_module(code)
    except cst.ParserSyntaxError:
        return Repaired(code)
    out = Repaired(code)
    module = _borrow_helpers(module, sources, out)
    module = _name_the_network(module, out)
    module = _hyperparameter_names(module, out)
    module = _adapt_net(module, out)
    out.code = module.code
    return out


def _borrow_helpers(module: cst.Module, sources: tuple[str, ...], out: Repaired) -> cst.Module:
    """Names the code uses but never defines that are module-level definitions of a network or block its
    prompt showed (the model wrote a new Net around the example's `Fire` or a block's `ASPPPooling`):
    copied in, with the definitions they use in turn, before the code's first definition. Never `Net`,
    `supported_hyperparameters` or a block's `BLOCK` alias."""
    import ast

    from nngpt_ray.contract import undefined_names

    try:
        missing = undefined_names(parse_tree(module.code))
    except SyntaxError:
        return module
    if not missing or not sources:
        return module
    definitions: dict[str, tuple[ast.stmt, str]] = {}
    for source in sources:
        try:
            tree = parse_tree(source)
        except SyntaxError:
            continue
        for statement in tree.body:
            for name in _binds(statement):
                if name not in ("Net", "supported_hyperparameters", "BLOCK"):
                    definitions.setdefault(name, (statement, source))
    defined = _defined(module)
    taken: list[str] = []
    copied: list[str] = []

    def take(name: str) -> None:
        if name in taken or name not in definitions:
            return
        taken.append(name)
        statement, source = definitions[name]
        for node in ast.walk(statement):  # the helpers this one uses come first
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in defined:
                take(node.id)
        copied.append(ast.get_source_segment(source, statement) or "")

    for name in missing:
        take(name)
    if not copied:
        return module
    first = next((i for i, s in enumerate(module.body) if isinstance(s, (cst.ClassDef, cst.FunctionDef))),
                 len(module.body))
    borrowed = list(cst.parse_module("\n\n".join(copied) + "\n").body)
    out.notes.append(f"copied {', '.join(taken)} from the network or block of its prompt that defines them")
    return module.with_changes(body=[*module.body[:first], *borrowed, *module.body[first:]])


def _binds(statement) -> list[str]:
    import ast

    if isinstance(statement, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return [statement.name]
    if isinstance(statement, (ast.Assign, ast.AnnAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return [t.id for t in targets if isinstance(t, ast.Name)]
    return []


def _defined(module: cst.Module) -> set[str]:
    return {s.name.value for s in module.body if isinstance(s, (cst.ClassDef, cst.FunctionDef))}


def dotted(node: cst.BaseExpression) -> str:
    """`torch.nn.Module` from its libcst Attribute chain ("" for anything else)."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{dotted(node.value)}.{node.attr.value}"
    return ""


def _classes(module: cst.Module) -> dict[str, cst.ClassDef]:
    return {s.name.value: s for s in module.body if isinstance(s, cst.ClassDef)}


def _name_the_network(module: cst.Module, out: Repaired) -> cst.Module:
    """No class Net, and exactly one nn.Module subclass that no other class uses: that one is the network."""
    classes = _classes(module)
    if "Net" in classes:
        return module
    networks = [name for name, c in classes.items() if any(dotted(b.value) in _MODULE_BASES for b in c.bases)]
    used = {n.value for name in networks for n in _names(classes[name]) if n.value != name}
    roots = [name for name in networks if name not in used]
    if len(roots) != 1:
        return module
    old = roots[0]

    class Rename(cst.CSTTransformer):
        def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
            return updated.with_changes(value="Net") if updated.value == old else updated

    out.notes.append(f"renamed class {old} to Net")
    return module.visit(Rename())


def _names(node: cst.CSTNode) -> list[cst.Name]:
    found: list[cst.Name] = []

    class Collect(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            found.append(n)

    node.visit(Collect())
    return found


def _number(node: cst.BaseExpression) -> float | None:
    if isinstance(node, (cst.Integer, cst.Float)):
        return float(node.evaluated_value) if isinstance(node, cst.Float) else int(node.evaluated_value)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        value = _number(node.expression)
        return -value if value is not None else None
    return None


def _hyperparameter_names(module: cst.Module, out: Repaired) -> cst.Module:
    """supported_hyperparameters() returning a dict literal: its keys are the names, numeric values defaults.
    Missing altogether (no function of another name declares them): lr and momentum, what the standard
    training methods use."""
    functions = [s for s in module.body if isinstance(s, cst.FunctionDef) and s.name.value == "supported_hyperparameters"]
    if not functions:
        others = [s.name.value for s in module.body if isinstance(s, cst.FunctionDef) and "hyperparam" in s.name.value]
        if "Net" not in _classes(module) or others:  # declared under another name: left to the diagnostic
            return module
        out.notes.append("added supported_hyperparameters() returning {'lr', 'momentum'}")
        added = cst.parse_statement("def supported_hyperparameters():\n    return {'lr', 'momentum'}\n")
        return module.with_changes(body=[added, *module.body])

    class DictToSet(cst.CSTTransformer):
        def leave_Return(self, original: cst.Return, updated: cst.Return) -> cst.Return:
            value = updated.value
            if not isinstance(value, cst.Dict) or not value.elements:
                return updated
            keys = []
            for element in value.elements:
                if not isinstance(element, cst.DictElement) or not isinstance(element.key, cst.SimpleString):
                    return updated
                keys.append(element.key)
                number = _number(element.value)
                if number is not None:
                    out.defaults[element.key.evaluated_value] = number
            out.notes.append("supported_hyperparameters() returned a dict: its keys are the names")
            return updated.with_changes(value=cst.Set([cst.Element(k) for k in keys]))

    return module.with_changes(body=[s.visit(DictToSet()) if s in functions else s for s in module.body])


def _adapt_net(module: cst.Module, out: Repaired) -> cst.Module:
    """Net with its own constructor signature (every argument mappable) and without train_setup/learn."""
    classes = _classes(module)
    net = classes.get("Net")
    if net is None or not isinstance(net.body, cst.IndentedBlock):
        return module
    body = list(net.body.body)
    methods = {s.name.value: s for s in body if isinstance(s, cst.FunctionDef)}
    init = methods.get("__init__")
    if init is not None:
        adapted = _adapt_init(init)
        if adapted is not None:
            body[body.index(init)] = adapted
            out.notes.append("Net.__init__ takes (self, in_shape, out_shape, prm, device); its own arguments "
                             "are read from them")
    if "train_setup" not in methods and "learn" not in methods:  # no training code at all (one of them written
        # under another name is the model's own training loop: left to the diagnostic)
        body += [cst.parse_statement(TRAIN_SETUP), cst.parse_statement(LEARN)]
        out.notes.append("added the standard Net.train_setup() and Net.learn() (SGD with lr and momentum, "
                         "cross-entropy, one epoch over the batches)")
    if body == list(net.body.body):
        return module
    new_net = net.with_changes(body=net.body.with_changes(body=body))
    return module.with_changes(body=[new_net if s is net else s for s in module.body])


def _adapt_init(init: cst.FunctionDef) -> cst.FunctionDef | None:
    params = init.params
    names = [p.name.value for p in (*params.posonly_params, *params.params)]
    if tuple(names[:5]) == INIT_PARAMS or not names or names[0] != "self":
        return None
    if params.star_arg not in (cst.MaybeSentinel.DEFAULT, None) or params.kwonly_params or params.star_kwarg:
        return None
    prologue = []
    for p in (*params.posonly_params, *params.params)[1:]:
        name = p.name.value
        if name in _CLASSES_ARG:
            prologue.append(f"{name} = out_shape[0]")
        elif name in _CHANNELS_ARG:
            prologue.append(f"{name} = in_shape[1]")
        elif p.default is not None:
            default = cst.Module(body=[]).code_for_node(p.default)
            prologue.append(f"{name} = prm.get({name!r}, {default})")
        else:
            return None  # a required argument we cannot map: leave it to the diagnostic
    new_params = cst.Parameters(params=[cst.Param(cst.Name(n)) for n in INIT_PARAMS])
    statements = [cst.parse_statement(line + "\n") for line in prologue]
    if not isinstance(init.body, cst.IndentedBlock):
        return None
    return init.with_changes(params=new_params, body=init.body.with_changes(body=[*statements, *init.body.body]))
