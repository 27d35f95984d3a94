"""Build many networks and run one forward pass each, in one throwaway process.

`python -I shapecheck.py < request.json > answer.json`. Used where thousands of *derived* networks
(mutants of the seed corpus) must be screened quickly: starting one sandbox per mutant would cost
seconds each. Still never in the caller's interpreter, and under CPU and address-space limits.
Standalone on purpose (standard library and torch only), like child.py.
"""

import json
import resource
import sys
import types


def main():
    request = json.load(sys.stdin)
    resource.setrlimit(resource.RLIMIT_CPU, (request["cpu_s"], request["cpu_s"]))
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    in_shape, classes = tuple(request["in_shape"]), request["classes"]
    answers = []
    for item in request["items"]:
        answers.append(check(item["code"], item["prm"], in_shape, classes, request["max_params"], torch))
    json.dump(answers, sys.stdout)


def check(code, prm, in_shape, classes, max_params, torch):
    module = types.ModuleType("candidate")
    try:
        exec(compile(code, "candidate.py", "exec"), module.__dict__)
        net = module.Net(in_shape, (classes,), dict(prm), torch.device("cpu"))
        params = sum(p.numel() for p in net.parameters())
        if params > max_params:
            return {"ok": False, "params": params, "error": f"{params} parameters > {max_params}"}
        net.eval()
        with torch.no_grad():
            out = net(torch.randn(*in_shape))
        if tuple(out.shape) != (in_shape[0], classes):
            return {"ok": False, "params": params, "error": f"output shape {tuple(out.shape)}"}
        return {"ok": True, "params": params, "error": None}
    except Exception as err:  # any failure just means: not a valid mutant
        return {"ok": False, "params": 0, "error": f"{type(err).__name__}: {err}"[:300]}


if __name__ == "__main__":
    main()
