"""`llm-jax sweep run|report FILE`: run a sweep's members (or print their launch commands), then tabulate them."""

from __future__ import annotations

import json

from llm_jax import argtypes
from llm_jax.sweep.spec import SweepError, load_sweep


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help="run a sweep file's members and report them as tables and plots")
    s.add_argument("action", choices=["run", "report"])
    s.add_argument("file", help="a sweep file, e.g. experiments/ablations/norm.py")
    s.add_argument("--parallel", type=argtypes.positive_int, default=1, help="run: members at once, as separate processes")
    s.add_argument("--only", help="run: only members whose name contains this")
    s.add_argument("--emit", nargs="?", const="local", choices=["local", "slurm", "tpu"],
                   help="run: print each unfinished member's launch command instead of running it")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sweep)


def cmd_sweep(args, extra) -> int:
    if extra:
        raise SweepError(f"unrecognised arguments: {' '.join(extra)} (overrides belong in the sweep file)")
    sweep, path = load_sweep(args.file)
    quiet = (lambda _: None) if args.json else print
    if args.action == "report":
        from llm_jax.sweep.report import report
        out = report(sweep, path, log=quiet)
    elif args.emit:
        from llm_jax.sweep.runner import emit
        for line in emit(sweep, args.emit):
            print(line)
        return 0
    else:
        from llm_jax.sweep.runner import run
        out = run(sweep, parallel=args.parallel, only=args.only, log=quiet if args.json else print)
        if args.json:
            print(json.dumps(out, sort_keys=True))
        if out["interrupted"]:
            from llm_jax.train.preemption import EXIT_PREEMPTED
            return EXIT_PREEMPTED
        return out["first_failure_status"]  # 0, or the exit status of the first member that failed
    if args.json:
        print(json.dumps(out, sort_keys=True, default=str))
    return 0
