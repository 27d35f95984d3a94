"""The `nngpt` command. Bad input ends with a one-line message and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from nngpt_ray import signals
from nngpt_ray.failures import UserError

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


def main(argv: list[str] | None = None) -> int:
    signals.install()  # a scheduler's stop request is a Ctrl-C, from the first moment
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except UserError as err:
        print(f"nngpt: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        err_console.print("nngpt: interrupted")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nngpt", description="LLM-driven AutoML for vision networks on Ray.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="YAML config (default: the embedded local preset)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting, e.g. --set trainers.count=4 (repeatable)")

    run = sub.add_parser("run", help="run the closed loop: generate, dedup, train, fine-tune")
    with_config(run)
    run.add_argument("--out", help="parent folder of run directories (run.out_dir)")
    run.add_argument("--name", help="run directory name (run.name)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    run.add_argument("--cycles", type=int, help="adapter versions to generate with (loop.cycles)")
    run.add_argument("--candidates", type=int, help="stop after this many generated candidates")
    run.add_argument("--minutes", type=float, help="end the run after this many minutes (generation in flight is "
                                                   "cancelled; candidates already training finish)")
    run.set_defaults(handler=_cmd_run)

    ev = sub.add_parser("eval", help="train one network file in the sandbox and report what was measured")
    with_config(ev)
    ev.add_argument("file", help="a Python file following the LEMUR network contract")
    ev.add_argument("--dataset", help="dataset name (default: data.dataset)")
    ev.add_argument("--epochs", type=int, help="epochs to train (default: train.epochs)")
    ev.add_argument("--lr", type=float)
    ev.add_argument("--momentum", type=float)
    ev.add_argument("--batch", type=int)
    ev.add_argument("--resize", type=int, help="square resize of the input images")
    ev.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="another hyperparameter")
    ev.add_argument("--test", action="store_true", help="also score the test split once, after the last epoch")
    ev.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ev.set_defaults(handler=_cmd_eval)

    st = sub.add_parser("status", help="per-cycle table of a run (several runs: also side by side)")
    st.add_argument("run_dir", nargs="+")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=_cmd_status)

    ex = sub.add_parser("export", help="write a run's tables as Parquet (and its networks as a LEMUR tree)")
    ex.add_argument("run_dir")
    ex.add_argument("--out", help="output folder (default: RUN_DIR/export)")
    ex.add_argument("--lemur", metavar="DIR", help="also write the trained networks and their per-epoch results "
                                                   "in LEMUR's layout (nn/, stat/) into DIR")
    ex.set_defaults(handler=_cmd_export)

    pr = sub.add_parser("predictor", help="fit or evaluate the learned early-stop predictor on run stores")
    prs = pr.add_subparsers(dest="action", metavar="ACTION", required=True)
    pf = prs.add_parser("fit", help="fit the learned model on one or more runs and save it")
    pf.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pf.add_argument("--out", help="model file (default: predictor.pkl in the first RUN_DIR)")
    pf.add_argument("--quantile", type=float, default=0.9, help="the upper estimate's quantile (default 0.9)")
    pf.set_defaults(handler=_cmd_predictor_fit)
    pe = prs.add_parser("eval", help="RMSE, Pearson r, within 5/10 points on families held out (grouped split)")
    pe.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pe.add_argument("--model", help="judge this model file on these runs instead of cross-validating a fresh one")
    pe.add_argument("--epochs", type=int, default=2, help="epochs seen before predicting (default 2)")
    pe.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    pe.set_defaults(handler=_cmd_predictor_eval)

    tr = sub.add_parser("transfer", help="train a run's networks again on another dataset (suitability data)")
    with_config(tr)
    tr.add_argument("run_dir", metavar="RUN_DIR")
    tr.add_argument("--dataset", required=True, help="the second dataset")
    tr.add_argument("--epochs", type=int, help="epochs per network (default: each network's own)")
    tr.add_argument("--limit", type=int, help="transfer at most this many networks (the first finished)")
    tr.add_argument("--out", help="run directory of the results (default: RUN_DIR-DATASET; resumed if it exists)")
    tr.set_defaults(handler=_cmd_transfer)

    su = sub.add_parser("suitability", help="which of two datasets a network suits better, from its features")
    sus = su.add_subparsers(dest="action", metavar="ACTION", required=True)
    sf = sus.add_parser("fit", help="fit the classifier on runs that hold networks trained on two datasets")
    sf.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    sf.add_argument("--datasets", help="A,B (default: the pair with most networks trained on both)")
    sf.add_argument("--out", help="model file (default: suitability.pkl in the first RUN_DIR)")
    sf.set_defaults(handler=_cmd_suitability_fit)
    se = sus.add_parser("eval", help="accuracy on families held out, beside the majority baseline")
    se.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    se.add_argument("--datasets", help="A,B (default: the pair with most networks trained on both)")
    se.add_argument("--model", help="judge this model file instead of cross-validating a fresh one")
    se.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    se.set_defaults(handler=_cmd_suitability_eval)

    rp = sub.add_parser("report", help="a static HTML page with figures of one or more runs")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", help="folder of the page (default: the first RUN_DIR/report)")
    rp.set_defaults(handler=_cmd_report)

    cp = sub.add_parser("compare", help="the LLM loop against Ray Tune TPE and random search, at equal budget")
    with_config(cp)
    cp.add_argument("--dataset", help="dataset (data.dataset)")
    cp.add_argument("--budget", type=int, default=40, help="candidates sent to a trainer per run (default 40)")
    cp.add_argument("--epochs", type=int, help="epochs per candidate (train.epochs)")
    cp.add_argument("--seeds", type=int, default=3, help="runs per method, seeds 0..S-1 (default 3)")
    cp.add_argument("--methods", default="llm,tpe,random", help="comma-separated: llm, tpe, random")
    cp.add_argument("--scheduler", choices=["asha"], help="early stopping for the Tune searches")
    cp.add_argument("--mode", choices=["loop", "hpo"], default="loop",
                    help="loop: whole searches at equal budget; hpo: one-shot hyperparameters on held-out networks")
    cp.add_argument("--out", help="folder of the comparison's runs (default: runs/compare-<time>)")
    cp.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    cp.set_defaults(handler=_cmd_compare)

    il = sub.add_parser("import-lemur", help="read a LEMUR tree (nn/, stat/) into the lasting corpus")
    il.add_argument("tree", help="LEMUR folder: nn/<name>.py and stat/<task>_<dataset>_<metric>_<name>/<epoch>.json")
    il.add_argument("--corpus", help="corpus folder (default: corpus.path of the config)")
    with_config(il)
    il.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    il.set_defaults(handler=_cmd_import_lemur)

    rag = sub.add_parser("rag", help="NN-RAG: standalone building blocks from installed vision libraries")
    rags = rag.add_subparsers(dest="rag_command", metavar="ACTION", required=True)
    rb = rags.add_parser("build", help="extract every nn.Module of the sources as a standalone file and validate it")
    rb.add_argument("--sources", default="torchvision", help="comma-separated: torchvision, timm (default torchvision)")
    rb.add_argument("--match", help="only targets whose module.Class contains this text")
    rb.add_argument("--out", default="runs/rag", help="block store folder (default runs/rag)")
    rb.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    rb.set_defaults(handler=_cmd_rag_build)

    bs = sub.add_parser("bootstrap", help="build (or rebuild) the embedded default model")
    with_config(bs)
    bs.add_argument("--force", action="store_true", help="rebuild even if a cached model exists")
    bs.set_defaults(handler=_cmd_bootstrap)
    return parser


# ---------------------------------------------------------------- eval

def _cmd_eval(args: argparse.Namespace) -> int:
    from nngpt_ray import datasets
    from nngpt_ray.api import network_spec
    from nngpt_ray.config import load_config
    from nngpt_ray.harness import evaluate

    cfg = load_config(args.config, args.set)
    if args.resize is not None:
        cfg.data.resize = args.resize
    values: dict = {name: getattr(args, name) for name in ("lr", "momentum", "batch") if getattr(args, name) is not None}
    for item in args.hp:
        key, _, value = item.partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"--hp {item!r} must look like NAME=NUMBER") from None
    spec = network_spec(args.file, dataset=args.dataset, epochs=args.epochs, hyperparameters=values, config=cfg)
    data = datasets.from_config(cfg.data, spec.dataset)
    epochs = spec.hyperparameters.epochs
    with _EpochProgress(epochs, enabled=True) as progress:
        result = evaluate(spec, data, cfg.sandbox, epochs=epochs, device=cfg.train.device, threads=cfg.train.threads,
                          seed=cfg.run.seed, on_epoch=progress.epoch_done, test=args.test)
    splits = data.splits()
    if args.json:
        print(json.dumps(result.summary() | {"dataset": spec.dataset, "splits": splits}))
    else:
        _print_result(result, splits)
    return 0


class _EpochProgress:
    """A progress bar on stderr (a plain line per epoch when stderr is not a terminal)."""

    def __init__(self, epochs: int, enabled: bool) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.epochs = epochs
        self.live = enabled and err_console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} epochs"), TimeElapsedColumn(),
                                 console=err_console, transient=False, disable=not self.live)
        self.task = self.progress.add_task("starting sandbox", total=epochs)

    def __enter__(self) -> _EpochProgress:
        self.progress.__enter__()
        if not self.live:
            err_console.print(f"training for {self.epochs} epochs in the sandbox ...")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def epoch_done(self, epoch, _features) -> bool:
        text = f"epoch {epoch.epoch}: accuracy {100 * epoch.val_accuracy:.1f}%"
        self.progress.update(self.task, advance=1, description=text)
        if not self.live:
            err_console.print(f"{text} ({epoch.seconds:.1f} s)")
        return True


def _print_result(result, splits: dict) -> None:
    from rich.table import Table

    if result.failure is None:
        out_console.print(f"[bold green]ok[/]: best validation accuracy {100 * result.best_accuracy:.2f}% "
                          f"({result.params} parameters, {result.duration_s:.1f} s)")
        if result.test_accuracy is not None:
            out_console.print(f"test accuracy after the last epoch: {100 * result.test_accuracy:.2f}% "
                              f"({splits['test']} images, {splits['test_source']})")
    else:
        out_console.print(f"[bold red]failed[/]: {result.failure.value}")
        out_console.print(result.error or "", markup=False)
    if result.epochs:
        table = Table()
        for col in ("epoch", "train loss", "val accuracy", "seconds", "peak MB"):
            table.add_column(col, justify="right")
        for e in result.epochs:
            table.add_row(str(e.epoch), "-" if e.train_loss is None else f"{e.train_loss:.4f}",
                          f"{100 * e.val_accuracy:.2f}%", f"{e.seconds:.2f}", f"{e.peak_memory_mb or 0:.0f}")
        out_console.print(table)
        out_console.print(f"validation: {splits['validation']} images, {splits['validation_source']}", style="dim")


# ---------------------------------------------------------------- status / export

def _cmd_status(args: argparse.Namespace) -> int:
    from nngpt_ray.report import novelty_table, status, status_table
    from nngpt_ray.rundir import RunDir
    from nngpt_ray.store import Store

    from nngpt_ray.config import load_config
    from nngpt_ray.report import run_row, runs_table

    rows, summaries = [], []
    for run_dir in args.run_dir:
        run = RunDir.existing(run_dir)
        with Store(run.store, readonly=True) as store:
            summary = status(store)
        summaries.append(summary)
        rag = load_config(run.config).rag if run.config.exists() else None
        rows.append(run_row(str(run.root), summary, f"{rag.k} blocks of {rag.store}" if rag and rag.store else "-"))
        if not args.json:
            out_console.print(status_table(summary, title=str(run.root)))
            out_console.print(novelty_table(summary))
    if len(rows) > 1 and not args.json:
        out_console.print(runs_table(rows))
    if args.json:
        print(json.dumps(summaries[0] if len(summaries) == 1 else {"runs": rows, "statuses": summaries}))
    return 0


def _run_dirs(run_dirs: list[str]):
    from nngpt_ray.rundir import RunDir

    return [RunDir.existing(d) for d in run_dirs]


def _stores(run_dirs: list[str]):
    from nngpt_ray.store import Store

    return [Store(run.store, readonly=True) for run in _run_dirs(run_dirs)]


def _cmd_predictor_fit(args: argparse.Namespace) -> int:
    from nngpt_ray.predictor import fit, one_openmp_thread

    one_openmp_thread()  # before scikit-learn loads
    stores = _stores(args.run_dirs)
    model = fit(stores, args.quantile)
    path = model.save(Path(args.out) if args.out else Path(args.run_dirs[0]) / "predictor.pkl")
    out_console.print(f"predictor: {path} (fitted on {model.examples} trained candidates)")
    return 0


def _cmd_predictor_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from nngpt_ray.predictor import LearnedModel, evaluate, one_openmp_thread

    one_openmp_thread()  # before scikit-learn loads
    model = LearnedModel.load(Path(args.model)) if args.model else None
    result = evaluate(_stores(args.run_dirs), model, seen=args.epochs)
    table = Table(title=f"final accuracy from the first {args.epochs} epochs: {result['n']} candidates, "
                        f"{result['groups']} families, {'one model' if model else 'families held out per fold'}")
    for name in ("model", "RMSE", "Pearson r", "within 5 pts", "within 10 pts"):
        table.add_column(name, justify="right")
    for name, m in result["models"].items():
        table.add_row(name, f"{m['rmse']:.4f}", f"{m['pearson']:.3f}", f"{100 * m['within_5']:.0f}%",
                      f"{100 * m['within_10']:.0f}%")
    out_console.print(table)
    if args.json:
        print(json.dumps(result))
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    from nngpt_ray.config import load_config
    from nngpt_ray.datasets import dataset_info
    from nngpt_ray.suitability import transfer

    run = _run_dirs([args.run_dir])[0]
    dataset_info(args.dataset)  # an unknown name fails here, before anything is created
    cfg = load_config(args.config or (run.config if run.config.is_file() else None), args.set)
    out = Path(args.out) if args.out else run.root.with_name(f"{run.root.name}-{args.dataset}")

    def said(i: int, n: int, result) -> None:
        best = "-" if result.best_accuracy is None else f"{100 * result.best_accuracy:.1f}%"
        err_console.print(f"[{i}/{n}] {result.candidate_id}: {result.final_status}, best {best} "
                          f"({result.duration_s:.0f} s)")

    with _stores([args.run_dir])[0] as source:
        counts = transfer(source, out, cfg, args.dataset, epochs=args.epochs, limit=args.limit, on_result=said)
    out_console.print(f"transfer: {counts['trained']} trained now, {counts['done_before']} already there, of "
                      f"{counts['networks']} networks: {out}")
    return 0


def _datasets(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise UserError(f"--datasets takes two different names, A,B (got {text!r})")
    return names


def _cmd_suitability_fit(args: argparse.Namespace) -> int:
    from nngpt_ray.predictor import one_openmp_thread
    from nngpt_ray.suitability import fit

    one_openmp_thread()  # before scikit-learn loads
    model = fit(_stores(args.run_dirs), _datasets(args.datasets))
    path = model.save(Path(args.out) if args.out else Path(args.run_dirs[0]) / "suitability.pkl")
    out_console.print(f"suitability: {path} ({model.datasets[0]} vs {model.datasets[1]}, "
                      f"fitted on {model.examples} networks)")
    return 0


def _cmd_suitability_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from nngpt_ray.predictor import one_openmp_thread
    from nngpt_ray.suitability import SuitabilityModel, evaluate

    one_openmp_thread()  # before scikit-learn loads
    model = SuitabilityModel.load(Path(args.model)) if args.model else None
    result = evaluate(_stores(args.run_dirs), model, _datasets(args.datasets))
    a, b = result["datasets"]
    table = Table(title=f"ranks higher on {a} or on {b}? {result['n']} networks, {result['groups']} families, "
                        f"{'one model' if model else 'families held out per fold'}; {a} for "
                        f"{100 * result['share_a']:.0f}%")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    for name, m in result["models"].items():
        table.add_row(name, f"{100 * m['accuracy']:.1f}%")
    table.add_row("NNGPT (reported, code only)", f"{100 * result['nngpt_reported']:.0f}%")
    out_console.print(table)
    if args.json:
        print(json.dumps(result))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from nngpt_ray.report_html import render
    from nngpt_ray.rundir import RunDir

    runs = [RunDir.existing(d) for d in args.run_dirs]
    page = render(runs, Path(args.out) if args.out else runs[0].root / "report")
    out_console.print(f"report: {page}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from nngpt_ray.export import export_parquet
    from nngpt_ray.rundir import RunDir
    from nngpt_ray.store import Store

    run = RunDir.existing(args.run_dir)
    out = Path(args.out) if args.out else run.root / "export"
    with Store(run.store, readonly=True) as store:
        counts = export_parquet(store, out)
        for name, n in counts.items():
            out_console.print(f"{out / (name + '.parquet')}: {n} rows")
        if args.lemur:
            from nngpt_ray.lemur import export_run

            lemur = export_run(store, Path(args.lemur))
            out_console.print(f"{args.lemur}: {lemur['networks']} networks, {lemur['trials']} trials in "
                              f"{lemur['files']} stat files (LEMUR layout)")
    return 0


def _cmd_import_lemur(args: argparse.Namespace) -> int:
    from nngpt_ray.config import load_config
    from nngpt_ray.corpus import CorpusStore
    from nngpt_ray.lemur import read_tree

    folder = args.corpus or load_config(args.config, args.set).corpus.path
    if not folder:
        raise UserError("import-lemur needs a corpus folder: --corpus DIR, or corpus.path in the config")
    tree = read_tree(Path(args.tree))
    with CorpusStore(folder) as corpus:
        added = corpus.add(tree.networks, tree.trials, origin=f"lemur:{Path(args.tree).resolve()}")
    for problem in tree.problems[:20]:
        err_console.print(f"skipped {problem}")
    if len(tree.problems) > 20:
        err_console.print(f"... and {len(tree.problems) - 20} more skipped")
    summary = {"networks": added["networks"], "trials": len(tree.trials), "new_trials": added["trials"],
               "skipped": tree.skipped, "corpus": str(folder)}
    out_console.print(f"{summary['networks']} networks, {summary['trials']} trials ({summary['new_trials']} new) "
                      f"into {folder}; skipped: {', '.join(f'{k} {v}' for k, v in tree.skipped.items()) or 'none'}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _cmd_rag_build(args: argparse.Namespace) -> int:
    from rich.progress import Progress as Bar

    from nngpt_ray import rag

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    out = Path(args.out)
    with Bar(console=err_console, transient=True) as bar:
        task = bar.add_task("validating blocks in the sandbox", total=None)
        summary = rag.build(sources, out, match=args.match,
                            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                            on_stage=lambda stage: bar.update(task, description=stage))
    result = summary.as_json()
    for source, why in result["missing_sources"].items():
        err_console.print(f"rag source {source}: {why}")
    if result["unimportable_modules"]:
        err_console.print(f"{len(result['unimportable_modules'])} modules of the sources do not import here (their "
                          f"classes are not targets): {', '.join(sorted(result['unimportable_modules']))}")
    out_console.print(f"{result['valid']} of {result['targets']} targets valid ({100 * result['rate']:.1f}%), "
                      f"{result['extracted']} extracted, {result['valid_with_stand_ins']} of the valid with PIL cut "
                      f"out; failures: {', '.join(f'{k} {v}' for k, v in result['failures'].items()) or 'none'}; "
                      f"store {out / 'blocks.sqlite'}")
    if args.json:
        print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- run / bootstrap

def _cmd_run(args: argparse.Namespace) -> int:
    from nngpt_ray.actors.driver import execute
    from nngpt_ray.api import prepare_run
    from nngpt_ray.progress import Progress
    from nngpt_ray.report import novelty_table, status_table

    overrides = list(args.set)
    for flag, key in (("cycles", "loop.cycles"), ("candidates", "loop.max_candidates"), ("minutes", "loop.max_minutes"),
                      ("out", "run.out_dir"), ("name", "run.name")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    cfg, run = prepare_run(args.config, overrides, args.resume)
    with Progress(err_console) as progress:
        outcome = execute(cfg, run, on_tick=progress.update, console=err_console)
    summary = outcome.summary
    err_console.print(status_table(summary, title=f"{run.root}"))
    if summary["cycles"]:
        err_console.print(novelty_table(summary))
    info = summary["run"]
    err_console.print(f"wall {info.get('wall_seconds', 0):.0f} s; adapters applied: {info.get('adapters_applied', 0)}; "
                      f"trainer busy fraction: {info.get('trainer_busy_fraction')}")
    if outcome.ended == "failed":
        print(f"nngpt: error: {outcome.error}", file=sys.stderr)
        err_console.print(f"recorded results are kept: continue with  nngpt run --resume {run.root}")
        return 1
    if outcome.ended == "interrupted":
        err_console.print(f"interrupted: continue with  nngpt run --resume {run.root}")
        return 130
    if outcome.ended == "deadline":
        err_console.print(f"stopped at the deadline; queued candidates are kept: nngpt run --resume {run.root}")
    if summary["cycles"]:
        from nngpt_ray.report_html import render

        err_console.print(f"report: {render([run], run.root / 'report')}")
    err_console.print(f"results: {run.root}  (nngpt status {run.root}; nngpt export {run.root})")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import time

    from nngpt_ray import comparison
    from nngpt_ray.config import load_config

    overrides = list(args.set)
    if args.dataset:
        overrides.append(f"data.dataset={args.dataset}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = load_config(args.config, overrides)
    cfg.preflight()
    out = Path(args.out or Path(cfg.run.out_dir) / time.strftime("compare-%Y%m%d-%H%M%S")).expanduser()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.mode == "hpo":
        from nngpt_ray.baselines.hpo import compare_hpo

        summary = compare_hpo(cfg, out, say=err_console.print)
        out_console.print(comparison.hpo_table(summary))
    else:
        from nngpt_ray.baselines.compare import compare

        summary = compare(cfg, methods, args.budget, args.seeds, out, scheduler=args.scheduler, say=err_console.print)
        comparison.save(summary, out / "compare.json")
        png = comparison.plot(summary, out / "compare.png")
        out_console.print(comparison.table(summary))
        err_console.print(f"plot: {png}; data: {out / 'compare.json'}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from nngpt_ray.bootstrap import ensure_embedded_model
    from nngpt_ray.config import load_config

    cfg = load_config(args.config, args.set)
    path = ensure_embedded_model(cfg, force=args.force, say=err_console.print)
    out_console.print(f"embedded model: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
