"""Strip outputs, execution counts and run metadata from the committed notebooks (nbstripout).

    python scripts/strip_notebooks.py            # strip notebooks/*.ipynb in place
    python scripts/strip_notebooks.py --check    # exit 1 listing notebooks that still hold outputs
    python scripts/strip_notebooks.py PATH...    # other notebooks

Executed copies live in runs/<name>/executed/; the notebooks in notebooks/ are committed clean so diffs
show only what a person changed. tests/test_notebooks.py fails on a notebook with outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbstripout import strip_output

ROOT = Path(__file__).resolve().parent.parent
# Metadata that a run adds and nbstripout keeps by default: papermill's and the saved widget state.
EXTRA_KEYS = ["metadata.papermill", "metadata.widgets", "cell.metadata.papermill", "cell.metadata.execution",
              "cell.metadata.scrolled", "cell.metadata.collapsed"]


def stripped(path: Path) -> tuple[str, str]:
    """(current text, stripped text) of a notebook."""
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    nb = strip_output(nb, keep_output=False, keep_count=False, keep_id=True, extra_keys=EXTRA_KEYS)
    return text, nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", type=Path, help="notebooks (default notebooks/*.ipynb)")
    p.add_argument("--check", action="store_true", help="only report; exit 1 if a notebook needs stripping")
    args = p.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        before, after = stripped(path)
        if before == after:
            continue
        dirty.append(path)
        if not args.check:
            sys.path.insert(0, str(ROOT))
            from pixlab._atomic import atomic_write
            with atomic_write(path, "w") as f:
                f.write(after)
    verb = "need stripping" if args.check else "stripped"
    for path in dirty:
        print(f"{verb}: {path}")
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    raise SystemExit(main())
