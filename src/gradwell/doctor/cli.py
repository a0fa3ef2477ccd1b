"""``gradwell doctor FILE``: the doctor on a Python file that defines ``make_model()`` and
``make_data()``.

``make_data()`` returns the training loader, or ``(train_loader, eval_loader)`` (then the score
is the mean loss over ``eval_loader``). The file may also define ``loss_fn`` (default
``torch.nn.CrossEntropyLoss()``). The report is printed and written to ``OUT/doctor.html``;
trials are stored in ``OUT/lab.sqlite``, so the same command resumes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return n


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``doctor`` on the ``gradwell`` command's sub-parsers."""
    p = sub.add_parser("doctor", help="diagnose a model and measure the remedies on your data "
                       "(FILE defines make_model() and make_data())")
    p.add_argument("file", metavar="FILE.py")
    p.add_argument("--steps", type=_positive, default=200, help="steps per trial (default 200)")
    p.add_argument("--seeds", type=_positive, default=3, help="seeds per configuration "
                   "(>= 3; default 3)")
    p.add_argument("--optimizer", default="adam", help="adam, adamw, sgd, momentum, nesterov or "
                   "rmsprop (default adam)")
    p.add_argument("--lr", type=float, default=None, help="baseline learning rate (default: "
                   "the optimizer's)")
    p.add_argument("--out", default="gradwell-doctor", help="directory for the store and "
                   "doctor.html (default ./gradwell-doctor)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


class _Bad(Exception):
    pass


def _user_error(what: str, file: Path, e: BaseException) -> _Bad:
    """A usage error for an exception raised by the user's file: what failed, the exception,
    and the traceback lines inside that file only (gradwell's own frames are noise here)."""
    if isinstance(e, SyntaxError):
        return _Bad(f"{file} has a syntax error at line {e.lineno}: {e.msg}")
    mine = [f for f in traceback.extract_tb(e.__traceback__)
            if Path(f.filename).resolve() == file.resolve()]
    where = "".join(f"\n  {file.name}, line {f.lineno}, in {f.name}: {f.line}" for f in mine)
    return _Bad(f"{what} raised {type(e).__name__}: {e}{where}")


def _load(path: str) -> Any:
    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise _Bad(f"{path} is not a Python file; give FILE.py defining make_model() and "
                   "make_data()")
    spec = importlib.util.spec_from_file_location(f"gradwell_doctor_user_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:           # the user's code: report it, not a gradwell traceback
        raise _user_error(f"loading {path}", file, e) from None
    finally:
        sys.path.pop(0)
    for name in ("make_model", "make_data"):
        if not callable(getattr(module, name, None)):
            raise _Bad(f"{path} defines no function {name}(); the doctor needs make_model() "
                       "(a fresh model) and make_data() (a loader, or (train, eval) loaders)")
    return module


def _split(data: Any, path: str) -> tuple[Any, Any]:
    """``(train, eval)`` from what ``make_data()`` returned: a loader, or a 2-tuple."""
    if not isinstance(data, tuple):
        return data, None
    if len(data) != 2:
        raise _Bad(f"make_data() in {path} returned a tuple of {len(data)} items; return "
                   "the training loader, or (train_loader, eval_loader)")
    return data


def run(args: argparse.Namespace) -> int:
    """Run the doctor for parsed ``args``; 0 on success, 2 on bad usage."""
    from ..lab.progress import starting

    try:
        if args.seeds < 3:
            raise _Bad("--seeds must be at least 3 (a verdict needs the spread over 3 seeds)")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise _Bad(f"--out {out} is a file; give a directory (it is created if missing)")
        with starting(f"loading {args.file} and its data", not args.no_progress):
            module = _load(args.file)          # the user's imports (torch) and data: seconds
            import torch
            from rich.console import Console

            from .session import doctor
            try:
                data = module.make_data()
            except Exception as e:
                raise _user_error(f"make_data() in {args.file}", Path(args.file), e) from None
        train, evaluate = _split(data, args.file)
    except _Bad as e:
        print(f"gradwell: error: {e}", file=sys.stderr)
        return 2
    loss_fn = getattr(module, "loss_fn", None) or torch.nn.CrossEntropyLoss()
    try:
        report = doctor(module.make_model, train, loss_fn, optimizer=args.optimizer, lr=args.lr,
                        budget_steps=args.steps, seeds=args.seeds, eval_loader=evaluate,
                        directory=out, progress=not args.no_progress)
    except (TypeError, ValueError) as e:
        print(f"gradwell: error: {e}", file=sys.stderr)
        return 2
    console = Console() if sys.stdout.isatty() else Console(width=110, soft_wrap=True)
    report.print(console)
    console.print(f"{report.seconds:.1f} s · report: {report.write_html()}", markup=False)
    return 0
