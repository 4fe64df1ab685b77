"""`unigrf claims ROOT [ROOT ...]`: the paper's six claims, answered from the claim grids' reports.

Each ROOT holds the report directories of ablations/{paper,m_sweep,sync,scaling}.yaml as `unigrf
ablate` wrote them (copied or renamed to `paper/`, `m_sweep/`, `sync/`, `scaling/`; e.g.
reports/amazon-mi), for one or more datasets; several ROOTs (one per dataset) give one table,
claim × dataset. Writes OUT/claims.md (OUT: `--out`, or the one ROOT) (verdict per claim and dataset — holds, contradicted or
inconclusive — every comparison with its effect, its interval over test users and seeds
Bonferroni-corrected over the claim, and p; claim 5 by an equivalence test) and OUT/claims.csv,
and prints claims.md.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "roots",
        nargs="+",
        metavar="ROOT",
        help="a directory holding paper/, m_sweep/, sync/, scaling/ reports (one per dataset, or several)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="where claims.md / claims.csv go (default: the one ROOT; needed with several)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unigrf.ablation import claims
    from unigrf.ablation.report import ReportError
    from unigrf.atomic import write_text_atomic

    if not 0.0 < args.alpha < 1.0:
        print(f"unigrf claims: --alpha must lie in (0, 1), got {args.alpha}", file=sys.stderr)
        return 2
    if args.out is None and len(args.roots) > 1:
        print("unigrf claims: several ROOTs need --out DIR (where claims.md goes)", file=sys.stderr)
        return 2
    try:
        answers = [a for root in args.roots for a in claims.answer(root, args.alpha)]
    except ReportError as err:
        print(f"unigrf claims: {err}", file=sys.stderr)
        return 2
    datasets = [a.dataset for a in answers]
    twice = sorted({d for d in datasets if datasets.count(d) > len(claims.CLAIMS)})
    if twice:
        print(f"unigrf claims: dataset(s) {', '.join(twice)} found under more than one ROOT", file=sys.stderr)
        return 2
    text = claims.markdown(answers, args.alpha)
    root = Path(args.out if args.out is not None else args.roots[0])
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / "claims.md", "# The paper's claims (`unigrf claims`)\n\n" + text)
    write_text_atomic(root / "claims.csv", claims.frame(answers).to_csv(index=False))
    print(text, flush=True)
    print(f"written to {root}/claims.md (+ claims.csv)", file=sys.stderr, flush=True)
    return 0
