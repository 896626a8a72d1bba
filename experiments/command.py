"""The command line of the experiment presets: run a preset's sweeps into OUT, then write their report.

    python -m experiments.upsampling_ablation --preset=cpu --out=experiments/runs/ablation_cpu \\
        --report-dir=experiments/results/ablation_cpu

It sits on top of the one-way flow (studies -> runner -> measurements -> results -> report): it records the sweeps
as declared (OUT/sweep.json, which the report reads), runs them with experiments.sweep, measures what the studies need
beyond the runs (experiments.measure: for smoke tests and paper reproductions, after training, and with --report-only
whatever is missing, so that finished runs of older code still report; --reanalyze measures everything again), and
calls experiments.report. A report under experiments/results/ is refused from a tree with uncommitted code unless
--allow-dirty.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence

from experiments import layout, preregistration, report
from experiments.definitions import Sweep
from experiments.measure import measure_studies
from experiments.sweep import check_seeds_per_program, dedupe, expand, reanalyze, run_state, run_sweep
from segjax import cli
from segjax.files import write_json
from segjax.train import Interrupted


def narrowed(sweep: Sweep, seeds, keys: set[str]) -> Sweep:
    """The part of `sweep` a --seeds / --only invocation runs: those seeds, those arms and the arms they start from
    (`init_from`, whose runs they read), the hypotheses they allow."""
    by_label = {(a.model, a.label): a for a in sweep.arms}
    kept, todo = set(keys), [a for a in sweep.arms if a.key in keys]
    while todo:
        arm = todo.pop()
        source = by_label.get((arm.model, arm.init_from))
        if source is not None and source.key not in kept:
            kept.add(source.key)
            todo.append(source)
    arms = tuple(a for a in sweep.arms if a.key in kept)
    hypotheses = tuple(h for h in sweep.hypotheses if all(f"{h.model}/{arm}" in keys for arm in h.arms))
    return dataclasses.replace(sweep, arms=arms, seeds=tuple(seeds), hypotheses=hypotheses)


def main(
    presets: Mapping[str, Callable[[], Sweep | Sequence[Sweep]]],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    default_out: str = "experiments/runs",
) -> int:
    """CLI for a sweep file: pick a preset, run it into --out, then write the report into OUT/report."""
    cli.use_fast_cpu_kernels()  # before the first JAX computation; spawned workers inherit it
    parser = _parser(presets, prog, default_out)
    args = parser.parse_args(argv)

    made = presets[args.preset]()
    sweeps = [made] if isinstance(made, Sweep) else list(made)
    out = pathlib.Path(args.out or f"{default_out}/{args.preset}")
    seeds = list(range(args.seeds)) if args.seeds else None
    runs = dedupe([r for s in sweeps for r in expand(s, only=args.only, seeds=seeds)])
    if not runs:
        arms = [a.key for s in sweeps for a in s.arms]
        parser.error(f"--only {args.only} matches no arm of preset {args.preset!r}; its arms are {arms}")
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--note")]
    command = " ".join(["python -m", prog or "experiments.sweep", *shown]) + (" --note=..." if args.note else "")
    if args.dry_run:
        for run in runs:
            print(f"{run.name:50s} {run.config_hash}  {run_state(run.workdir(out), run.config_hash)}")
        print(f"{len(runs)} runs")
        return 0
    if args.preregister:
        return _preregister(sweeps, parser, args.preset)
    try:  # a confirmatory sweep runs only as its committed plan says (before anything is written); --only runs a
        for s in sweeps:  # part of the planned sweep, so the whole sweep is checked
            preregistration.check_sweep(s)
    except preregistration.PreregistrationChanged as e:
        cli.fail(parser.prog, str(e))
    if seeds is not None:
        planned = [s.name for s in sweeps if s.preregistered]
        if planned:
            parser.error(f"--seeds replaces the preregistered seeds of {planned}; run it without --seeds")
    try:
        check_seeds_per_program(runs, args.seeds_per_program)
    except ValueError as e:
        cli.fail(parser.prog, str(e))
    if seeds is not None or args.only:
        sweeps = [narrowed(s, seeds or s.seeds, {r.arm.key for r in runs}) for s in sweeps]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / layout.SWEEP_FILE, [s.record() for s in sweeps])
    report_dir = pathlib.Path(args.report_dir or out / "report")
    if not args.no_report:
        try:
            report.check_clean(report_dir, args.allow_dirty)  # before hours of training, not after
        except report.UncommittedChanges as e:
            cli.fail(parser.prog, str(e))
    failed = []
    if args.reanalyze:
        reanalyze(runs, out)
    elif not args.report_only:
        try:
            results = run_sweep(runs, out, jobs=args.jobs, seeds_per_program=args.seeds_per_program)
        except Interrupted as e:  # SIGTERM or Ctrl-C: the runs saved what they had and resume next time
            print(f"{parser.prog}: {e}", file=sys.stderr)
            return e.exit_status
        failed = [name for name, status in results.items() if status == "failed"]
    if any(s.smoke_test or s.reproduction for s in sweeps):  # the reports that show the studies' sections
        measure_studies(out, runs, again=args.reanalyze)
    if args.no_report:
        return 1 if failed else 0
    try:
        report.write_report(out, report_dir, command=command, note=args.note, allow_dirty=args.allow_dirty)
    except (report.UncommittedChanges, preregistration.PreregistrationChanged) as e:
        cli.fail(parser.prog, str(e))
    print(f"[sweep] report: {report_dir / 'REPORT.md'}")
    if failed:
        print(f"[sweep] {len(failed)} runs failed (see their error.txt): {failed}", file=sys.stderr)
        return 1
    return 0


def _parser(presets, prog: str | None, default_out: str) -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog=prog or "experiments.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(presets))
    parser.add_argument("--out", default=None, help=f"run folder (default {default_out}/<preset>)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (1: in this process)")
    parser.add_argument(
        "--seeds-per-program",
        type=int,
        default=1,
        help="train up to K seeds of an arm as one vmapped program (segjax.multiseed), for accelerators; on CPU it "
        "is slower (grouped convolutions), so the default is 1",
    )
    parser.add_argument("--seeds", type=int, default=None, help="use seeds 0..N-1 instead of the preset's")
    parser.add_argument("--only", action="append", default=[], help="run only arms whose model/label contains this")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    parser.add_argument(
        "--preregister", action="store_true", help="write the preset's frozen plan (commit it before the runs)"
    )
    parser.add_argument("--report-only", action="store_true", help="skip training; report on what is done")
    parser.add_argument(
        "--reanalyze", action="store_true", help="measure the finished runs again (no training), then report"
    )
    parser.add_argument("--report-dir", default=None, help="where the report goes (default OUT/report)")
    parser.add_argument("--no-report", action="store_true", help="train only; write the report later")
    parser.add_argument("--note", default="", help="text for the report's 'How this was produced' section")
    parser.add_argument("--allow-dirty", action="store_true", help="allow a report from uncommitted code")
    return parser


def _preregister(sweeps: Sequence[Sweep], parser: cli.ArgumentParser, preset: str) -> int:
    """--preregister: writes the frozen plan of each sweep that names one (commit it before the runs)."""
    try:
        written = [preregistration.write(s.preregistered, preregistration.plan(s)) for s in sweeps if s.preregistered]
    except preregistration.PreregistrationChanged as e:
        cli.fail(parser.prog, str(e))
    if not written:
        parser.error(f"preset {preset!r} names no preregistered plan")
    print("\n".join(f"wrote {p}; commit it before the runs" for p in written))
    return 0
