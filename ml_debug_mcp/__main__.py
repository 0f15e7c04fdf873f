"""`python -m ml_debug_mcp` and the `ml-debug-mcp` console script."""

import sys


def main(argv: list[str] | None = None) -> int:
    from ml_debug_mcp.server.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
