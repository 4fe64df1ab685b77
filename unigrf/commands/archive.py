"""`unigrf archive SRC DEST`: a grid's report and finished cells, without checkpoints.

SRC is a report directory (`<results_dir>/ablations/<grid>/`); DEST gets what `unigrf report`,
`unigrf claims` and `unigrf ablate --resume` read — the report, per-user outcomes and each
finished cell's records — and no checkpoint, TensorBoard or Ray file (unigrf/ablation/archive.py).
The copy is what reports/ commits; copied back into a results directory, a resumed grid trains
only the cells it lacks.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="a report directory, e.g. results/ablations/paper-ml-100k")
    parser.add_argument("dest", metavar="DEST", help="where the archive goes, e.g. reports/ml-100k/paper")


def run(args: argparse.Namespace) -> int:
    from unigrf.ablation.archive import ArchiveError, archive, finished_cells

    try:
        dest = archive(args.source, args.dest)
    except (ArchiveError, OSError) as err:
        print(f"unigrf archive: {err}", file=sys.stderr)
        return 2
    print(f"archived {len(finished_cells(dest))} finished cell(s) and the report to {dest}", flush=True)
    return 0
