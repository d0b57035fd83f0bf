"""Replace a marked block of a Markdown document with the contents of a generated file.

Usage: python -m bench.insert_markdown docs/BENCHMARKS.md NAME docs/results/NAME.md

The block runs from the line `<!-- NAME:begin -->` to the line `<!-- NAME:end -->`, and both
marker lines stay. docs/BENCHMARKS.md uses it to paste the `restorecli evaluate --markdown`
tables in unchanged, so the document always shows what the command wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

from restorecli.atomic import write_atomically


def insert(document: str, name: str, content: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if document.count(begin) != 1 or document.count(end) != 1:
        raise SystemExit(f"expected one '{begin}' and one '{end}' line in the document")
    head, rest = document.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{content.rstrip()}\n{end}{tail}"


def main(document_path: str, name: str, content_path: str) -> None:
    document = Path(document_path).read_text(encoding="utf-8")
    updated = insert(document, name, Path(content_path).read_text(encoding="utf-8"))
    write_atomically(Path(document_path), lambda temporary: temporary.write_text(updated, encoding="utf-8"))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
