"""``pixlab run``: execute the ordered notebooks headless with papermill (see :mod:`pixlab.app.runner`)."""

from __future__ import annotations

from pixlab.app.commands import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="run the notebooks 01..04 in order with papermill",
        description="Run notebooks/NN_*.ipynb in order into runs/NAME/executed/. Parameters are checked "
                    "against the notebooks' parameters cells before anything runs.",
        formatter_class=HelpFormatter)
    p.add_argument("--name", default="demo", help="run name: results go to RUNS_DIR/NAME")
    p.add_argument("--params", metavar="FILE", help="YAML or JSON file of parameter values")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   dest="texts", help="set a parameter (repeatable); VALUE is read as YAML: 2, 0.5, true, [a, b]")
    p.add_argument("--overwrite", action="store_true",
                   help="reuse a run folder made by another pixlab version or by hand (its outputs are "
                        "removed, labels/ is kept)")
    p.add_argument("--notebooks", metavar="DIR", help="folder of NN_name.ipynb notebooks (default: ./notebooks if it exists, else the "
                        "notebooks/ folder of the source checkout pixlab is installed from)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run folders")
    p.add_argument("--kernel", metavar="NAME", help="Jupyter kernel (default: the notebooks' python3, i.e. this Python)")
    p.add_argument("--progress", action="store_true", help="show a progress bar per cell")
    p.add_argument("--list", action="store_true", help="list the notebooks' parameters and exit")
    p.add_argument("--check", action="store_true",
                   help="check this machine for the workshop (libraries, kernel, notebooks, a tiny training) and exit")
    p.set_defaults(func=run)


def _list(args) -> int:
    from pixlab.app.runner import find_notebooks, notebook_parameters
    params = notebook_parameters(find_notebooks(args.notebooks))
    for p in params.values():
        print(f"{p.line:<48} # {p.help}  [{', '.join(n.split('_')[0] for n in p.notebooks)}]")
    return 0


def _check(args) -> int:
    from pixlab.app.runner import check_setup
    ok = True
    for what, good, detail in check_setup(args.notebooks):
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {what:<15} {detail}")
    print("ready for the workshop" if ok else "not ready: fix the FAIL lines above")
    return 0 if ok else 1


def run(args) -> int:
    from pixlab.app.runner import NotebookError, run_notebooks
    if args.list:
        return _list(args)
    if args.check:
        return _check(args)
    try:
        res = run_notebooks(args.name, params_file=args.params, texts=[tuple(t) for t in args.texts],
                            notebooks=args.notebooks, runs_dir=args.runs_dir, overwrite=args.overwrite,
                            kernel=args.kernel, progress=args.progress)
    except NotebookError as e:
        # A failing cell is not a crash of pixlab: one line, the kept notebook named, no traceback.
        from pixlab.app.cli import say
        say(f"pixlab: error: {e}", finished=True)  # after the notebook runner's progress bar
        return 1
    print(f"done in {res.total_seconds:.0f} s: {res.run_dir}")
    from pixlab.app.runner import Project
    for kind, files in Project(res.run_dir).outputs().items():
        if files:
            print(f"  {kind:<12} {len(files)} file(s), e.g. {files[0]}")
    return 0
