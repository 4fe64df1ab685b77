"""The committed claims tables (reports/current/claims.csv, claim × dataset, and each dataset's own
reports/current/<dataset>/claims.csv) are what `unigrf claims` computes from the committed report
directories: every verdict, effect, interval and p, to the digits the CSV keeps (the bootstrap is
seeded)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from unigrf.ablation import claims

CURRENT = Path(__file__).resolve().parents[1] / "reports" / "current"
TABLES = sorted(CURRENT.glob("claims.csv")) + sorted(CURRENT.glob("*/claims.csv"))


def _recompute(table: Path) -> pd.DataFrame:
    """The claims of the datasets `table` holds, from their report directories under CURRENT."""
    datasets = list(dict.fromkeys(pd.read_csv(table)["dataset"]))
    roots = [table.parent] if table.parent != CURRENT else [CURRENT / d for d in datasets]
    return claims.frame([a for root in roots for a in claims.answer(root)])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("table", TABLES, ids=[str(t.relative_to(CURRENT)) for t in TABLES])
def test_the_committed_claims_table_is_what_the_committed_reports_give(table, tmp_path):
    committed = pd.read_csv(table)
    # through the CSV, as the command writes it: the same float formatting on both sides
    fresh_path = tmp_path / "claims.csv"
    _recompute(table).to_csv(fresh_path, index=False)
    fresh = pd.read_csv(fresh_path)
    pd.testing.assert_frame_equal(fresh, committed, check_exact=False, rtol=1e-9, atol=1e-12)


def test_there_are_committed_tables_to_check():
    assert any(t.parent == CURRENT for t in TABLES) and len(TABLES) >= 3
