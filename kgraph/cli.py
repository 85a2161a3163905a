"""The `kgraph` command."""

from __future__ import annotations

import argparse
import sys


def build_parser():
    import kgraph

    parser = argparse.ArgumentParser(prog="kgraph", description="Compile, export and run Keras models with kgraph.")
    parser.add_argument("--version", action="version", version=f"kgraph {kgraph.__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
