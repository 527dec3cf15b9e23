"""The ``upt`` console script.

Today it reports the version and points at the entry points; the LightningCLI
(``upt fit/validate/test``) arrives with the entry-points issue.
"""

from __future__ import annotations

import argparse

from upt_lightning import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="upt",
        description="Universal Physics Transformer surrogates of PDEs. "
        "Train with `python train.py +experiment=burgers_upt`; generate data with "
        "`python -m upt_lightning.data.generate NAME --out DIR`.",
    )
    parser.add_argument("--version", action="version", version=f"upt_lightning {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
