"""`modelgate-serve`: the serving entry point (DESIGN contract 3).

The server itself is the serving issue's work; until it lands the command says so plainly and
exits non-zero rather than pretending to serve.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    del argv
    print("modelgate-serve: the model server is not built yet (serving issue)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
