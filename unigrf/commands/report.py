"""`unigrf report DIR`: rebuild an ablation report from its stored results, without re-running.

DIR is a grid's report directory, `<results_dir>/ablations/<grid>/` (results.csv,
histories.csv, grid.yaml, meta.json, datasets.json, and outcomes/ where the runs kept per-user
outcomes: without them a comparison's interval covers the seeds only, marked ‡); report.md,
report.tex and figures/ are rewritten and the report is printed.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="an ablation report directory, e.g. results/ablations/quick")
    parser.add_argument("--quiet", action="store_true", help="write the files without printing the report")


def run(args: argparse.Namespace) -> int:
    from unigrf.ablation.report import ReportError, write_report

    try:
        rendered = write_report(args.dir)
    except ReportError as err:
        print(f"unigrf report: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(rendered.markdown, flush=True)
    print(f"report written to {args.dir}/report.md (+ report.tex, figures/)", file=sys.stderr, flush=True)
    return 0
