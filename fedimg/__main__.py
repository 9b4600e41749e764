"""``python -m fedimg`` entry point."""

from fedimg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
