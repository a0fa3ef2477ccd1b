"""The ``gradwell`` command: ``demo``, ``lab list|run|report``, ``doctor``, ``--help``,
``--version``.

Exit status: 0 on success, 1 when a run's verdict fails or a trial failed, 2 on bad usage
(with a message saying what to do).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .lab.errors import StoreError

__all__ = ["main", "build_parser"]

EPILOG = """examples:
  gradwell demo                          the 20-layer vanishing-gradient demo (< 1 min)
  gradwell lab list                      built-in experiments
  gradwell lab run vanishing --quick     run one, reduced
  gradwell lab run my.toml --out runs/my --workers 2
  gradwell lab run my.toml --out runs/my --ray   trials as tasks on a local Ray instance
  gradwell lab report runs/my            write runs/my/report.html
  gradwell doctor examples/doctor_digits.py   measure the remedies for a model (< 2 min)
"""


class UsageError(Exception):
    """Bad usage: printed as ``gradwell: error: ...`` and exit status 2."""


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (number of worker "
                                         f"processes), got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gradwell`` command."""
    p = argparse.ArgumentParser(
        prog="gradwell", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find, explain and fix vanishing and exploding gradients in PyTorch.")
    p.add_argument("--version", action="version", version=f"gradwell {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train a 20-layer net with and without each remedy; "
                          "write a report (under a minute)")
    demo.add_argument("--out", default="gradwell-demo", help="lab directory (default: "
                      "./gradwell-demo)")
    demo.add_argument("--workers", type=_workers, default=None,
                      help="worker processes (default: the machine's cores)")
    demo.add_argument("--quick", action="store_true", help="a shorter budget")
    demo.add_argument("--open", action="store_true", help="open the report in a web browser")
    lab = sub.add_parser("lab", help="run experiments from the catalog or a TOML spec")
    lsub = lab.add_subparsers(dest="lab_command", metavar="SUBCOMMAND")
    ls = lsub.add_parser("list", help="built-in experiments, one per line")
    ls.add_argument("--names", action="store_true", help="print names only")
    run = lsub.add_parser("run", help="run a built-in experiment or a TOML spec (resumable)")
    run.add_argument("experiment", metavar="NAME|FILE.toml")
    run.add_argument("--quick", action="store_true", help="the spec's reduced version")
    run.add_argument("--out", default=None, help="lab directory (default: ./gradwell-lab/NAME)")
    run.add_argument("--workers", type=_workers, default=None,
                     help="worker processes (default: the machine's cores)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                     help="run the trials as Ray tasks: a local Ray instance, or the cluster "
                          "at ADDRESS (e.g. auto, or HEAD_IP:6379); needs gradwell[ray]")
    rep = lsub.add_parser("report", help="write DIR/report.html from a lab directory")
    rep.add_argument("directory", metavar="DIR")
    rep.add_argument("--out", default=None, help="HTML file (default: DIR/report.html)")
    from .doctor.cli import add_parser as add_doctor

    add_doctor(sub)
    p.set_defaults(parsers={"lab": lab, None: p})
    return p


def _load(experiment: str):
    from .lab import catalog
    from .lab.spec import SpecError, load_spec

    path = Path(experiment)
    if experiment in catalog.EXPERIMENTS:
        return catalog.EXPERIMENTS[experiment].load()
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UsageError(f"spec file {experiment} does not exist; give a path to a .toml "
                             "spec or a built-in name (gradwell lab list)")
        try:
            return load_spec(path)
        except SpecError as e:
            raise UsageError(f"invalid spec: {e}") from e
    raise UsageError(f"no built-in experiment {experiment!r} and no such file; run "
                     "'gradwell lab list' for the experiments, or give a path to a .toml spec")


def _print_verdict(console, run: str, store) -> bool:
    from rich.markup import escape

    from .lab.catalog import verdict_for
    from .lab.verdict import Results

    criteria = verdict_for(run, Results(store, run))
    if not criteria:
        return True
    for c in criteria:
        mark = "[green]✔[/]" if c.passed else "[red]✘[/]"
        console.print(f" {mark} {escape(c.claim)}: expected {escape(str(c.expected))}; "
                      f"measured {escape(str(c.measured))}")
    ok = all(c.passed for c in criteria)
    console.print("[bold green]reproduced[/]" if ok else "[bold red]not reproduced[/]")
    return ok


def _execute(spec, out: Path, workers: int | None, quick: bool, progress: bool,
             demo: bool, ray: str | bool | None = None) -> int:
    """Run, print the summary and verdict; the demo also writes the report. 1 when a trial
    failed or (outside the demo) a verdict criterion does not hold."""
    from rich.console import Console
    from rich.markup import escape

    from .lab.runner import run_spec
    from .lab.store import Store
    from .lab.summary import rich_table, summarize

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory (it is created if missing)")
    console = Console()
    if not console.is_terminal:
        console = Console(width=130, soft_wrap=True)        # never wrap paths in logs
    summary = run_spec(spec, out, workers=workers, quick=quick, progress=progress, ray=ray)
    with Store(out) as store:
        console.print(rich_table(summarize(store, summary.run), summary.run, spec.metrics))
        ok = _print_verdict(console, summary.run, store)
    console.print(f"{summary.ran} trials run, {summary.skipped} already in "
                  f"{escape(str(out))} ({summary.seconds:.1f} s)")
    for failure in summary.failed:
        console.print(f"[red]failed[/] {escape(failure)}")
    if demo:
        console.print(f"report: {escape(str(_write_report(out, None)))}")
    else:
        console.print(f"next: gradwell lab report {escape(shlex.quote(str(out)))}")
    return 0 if (ok or demo) and not summary.failed else 1


def _lab_list(names_only: bool) -> int:
    from .lab.catalog import EXPERIMENTS

    width = max(map(len, EXPERIMENTS), default=0)
    for name, exp in EXPERIMENTS.items():
        print(name if names_only else f"{name:<{width}}  {exp.summary}")
    return 0


def _write_report(directory: str | Path, out: str | None) -> Path:
    """The report, written; a path that cannot be written is a usage error naming it."""
    from .lab.html_report import REPORT_NAME
    from .lab.runner import write_report

    target = Path(out) if out else Path(directory) / REPORT_NAME
    try:
        return write_report(directory, out)
    except OSError as e:
        raise UsageError(f"cannot write the report to {target} ({e.strerror}); give --out a "
                         "file in a directory that exists and that you can write to") from e


def _lab_report(directory: str, out: str | None) -> int:
    from .lab.store import DB_NAME

    if not (Path(directory) / DB_NAME).is_file():
        raise UsageError(f"{directory} is not a lab directory (no {DB_NAME}); run "
                         "'gradwell lab run NAME --out DIR' first")
    print(_write_report(directory, out))
    return 0


def _prepared(experiment: str, progress: bool):
    """The spec, loaded while a spinner runs from the first second: importing torch and the
    lab takes seconds before the run's own progress bar can start."""
    from .lab.progress import starting

    with starting("importing torch, loading the experiment", progress):
        spec = _load(experiment)
        from .lab import html_report, runner  # noqa: F401  (the slow imports, under the spinner)
    return spec


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        code = _execute(_prepared("vanishing", True), Path(args.out), args.workers, args.quick,
                        True, demo=True)
        if args.open:
            import webbrowser

            webbrowser.open((Path(args.out) / "report.html").resolve().as_uri())
        return code
    if args.command == "lab" and args.lab_command == "list":
        return _lab_list(args.names)
    if args.command == "lab" and args.lab_command == "run":
        spec = _prepared(args.experiment, not args.no_progress)
        out = Path(args.out) if args.out else Path("gradwell-lab") / spec.name
        return _execute(spec, out, args.workers, args.quick, not args.no_progress, demo=False,
                        ray=args.ray)
    if args.command == "lab" and args.lab_command == "report":
        return _lab_report(args.directory, args.out)
    if args.command == "doctor":
        from .doctor.cli import run as run_doctor

        return run_doctor(args)
    parser = args.parsers["lab" if args.command == "lab" else None]
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gradwell`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit
    status (argparse's own usage errors exit 2 directly)."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (UsageError, StoreError) as e:
        print(f"gradwell: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradwell: interrupted; finished trials are stored, run the same command again "
              "to resume", file=sys.stderr)
        if argv is None:          # the real command: the store is closed, the workers ended;
            _exit_now(130)        # skip seconds of interpreter teardown (torch's, mostly)
        return 130


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
