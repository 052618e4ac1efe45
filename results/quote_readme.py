"""Rewrites the quoted blocks of results/README.md from the committed outputs in results/micro/:

- between ``<!-- vitbench claims EXP --scale micro --results results/micro -->`` and ``<!-- /claims -->``:
  the id, claim, runs and verdict lines of ``claims/<exp>.md`` (the numbers stay in that file);
- between ``<!-- tables EXP N -->`` and ``<!-- /tables -->``: the first N tables of ``tables/<exp>.md``.

results/make_micro.sh runs it last; tests/test_committed_results.py checks that the quotes are these.
Usage: ``python3 results/quote_readme.py [--check]`` (--check: exit 1 if README.md would change).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUOTED = ("## ", "claim:", "runs:", "verdict:")


def claims_block(exp: str, micro: Path = HERE / "micro") -> str:
    text = (micro / "claims" / f"{Path(exp).stem}.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith(QUOTED)]
    return "```text\n" + "\n".join(lines) + "\n```\n"


def tables_block(exp: str, n: int, micro: Path = HERE / "micro") -> str:
    sections = (micro / "tables" / f"{Path(exp).stem}.md").read_text().strip().split("\n\n**")
    return "\n\n**".join(sections[:n]).strip() + "\n"


def rewrite(readme: str) -> str:
    readme = re.sub(r"(<!-- vitbench claims (\S+) --scale micro --results results/micro -->\n).*?(<!-- /claims -->)",
                    lambda m: m.group(1) + claims_block(m.group(2)) + m.group(3), readme, flags=re.S)
    return re.sub(r"(<!-- tables (\S+) (\d+) -->\n).*?(<!-- /tables -->)",
                  lambda m: m.group(1) + "\n" + tables_block(m.group(2), int(m.group(3))) + "\n" + m.group(4),
                  readme, flags=re.S)


def main(argv: list[str]) -> int:
    path = HERE / "README.md"
    old = path.read_text()
    new = rewrite(old)
    if "--check" in argv:
        return int(new != old)
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
