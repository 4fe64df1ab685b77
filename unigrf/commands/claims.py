"""`unigrf claims ROOT`: the paper's six claims, answered from the claim grids' reports.

ROOT holds the report directories of ablations/{paper,m_sweep,sync,scaling}.yaml as `unigrf
ablate` wrote them (copied or renamed to `paper/`, `m_sweep/`, `sync/`, `scaling/`; e.g.
reports/amazon-mi). Writes ROOT/claims.md (verdict per claim and dataset — holds, contradicted or
inconclusive — every comparison with its effect, its interval over test users and seeds
Bonferroni-corrected over the claim, and p; claim 5 by an equivalence test) and ROOT/claims.csv,
and prints claims.md.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="a directory holding paper/, m_sweep/, sync/, scaling/ reports")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unigrf.ablation import claims
    from unigrf.ablation.report import ReportError
    from unigrf.atomic import write_text_atomic

    if not 0.0 < args.alpha < 1.0:
        print(f"unigrf claims: --alpha must lie in (0, 1), got {args.alpha}", file=sys.stderr)
        return 2
    try:
        answers = claims.answer(args.root, args.alpha)
    except ReportError as err:
        print(f"unigrf claims: {err}", file=sys.stderr)
        return 2
    text = claims.markdown(answers, args.alpha)
    root = Path(args.root)
    write_text_atomic(root / "claims.md", "# The paper's claims (`unigrf claims`)\n\n" + text)
    write_text_atomic(root / "claims.csv", claims.frame(answers).to_csv(index=False))
    print(text, flush=True)
    print(f"written to {root}/claims.md (+ claims.csv)", file=sys.stderr, flush=True)
    return 0
