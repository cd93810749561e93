"""`modelgate-serve`: the serving entry point (docs/architecture.md, contract 3)."""

from __future__ import annotations

import sys

from modelgate_serving.server import serve
from modelgate_serving.settings import SettingsError, load


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load(argv)
    except SettingsError as error:
        print(f"modelgate-serve: {error}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
