"""RESULTS.md's current tables, generated from the benchmarks' JSON outputs.

Every table of benchmarks/RESULTS.md that stands between

    <!-- table: NAME -->
    ...
    <!-- /table: NAME -->

is the Markdown of benchmarks/current/NAME.json (`common.Table`: title, command, machine,
columns, rows, optional column alignment). A benchmark run with `--out DIR`
(`python -m benchmarks SECTION... --out DIR`) writes such files; copy the ones that replace a
current table into benchmarks/current/ (`--take DIR` does it for every NAME.json in DIR that
RESULTS.md has a marker for) and regenerate:

    python benchmarks/tables.py                 # rewrite the marked tables in RESULTS.md
    python benchmarks/tables.py --take results/bench
    python benchmarks/tables.py --check         # exit 1 if RESULTS.md is not what the JSON gives

Text outside the markers is never touched; a marker without its JSON file is an error.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_JSON = HERE / "current"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table: (?P=name) -->)", re.S)


def render(table: dict) -> str:
    """A table's Markdown: header, separator (with its alignment: "l", "r", "c" or ""), rows."""
    columns = table["columns"]
    align = table.get("align") or [""] * len(columns)
    marks = {"": "---", "l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def generate(text: str, results: Path = RESULTS_JSON) -> str:
    """`text` with every marked table replaced by its JSON's rendering."""

    def fill(match: re.Match) -> str:
        path = results / f"{match['name']}.json"
        if not path.exists():
            raise SystemExit(f"RESULTS.md marks a table {match['name']!r} but {path} does not exist")
        return match.group(1) + render(json.loads(path.read_text())) + match.group(4)

    return BLOCK.sub(fill, text)


def names(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    parser.add_argument("--take", type=Path, help="copy DIR/NAME.json for every marked NAME first")
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD)
    args = parser.parse_args(argv)
    text = args.results_md.read_text()
    if args.take:
        for name in names(text):
            source = args.take / f"{name}.json"
            if source.exists():
                shutil.copyfile(source, RESULTS_JSON / source.name)
                print(f"took {source}")
    new = generate(text)
    if args.check:
        if new != text:
            print(
                f"{args.results_md}: tables differ from benchmarks/current/*.json; run benchmarks/tables.py"
            )
            return 1
        print(f"{args.results_md}: {len(names(text))} generated tables up to date")
        return 0
    if new != text:
        args.results_md.write_text(new)
    print(f"{args.results_md}: {len(names(text))} tables generated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
