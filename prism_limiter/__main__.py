"""``python -m prism_limiter``: the command line (see ``prism_limiter.cli``)."""

from __future__ import annotations

from prism_limiter.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
