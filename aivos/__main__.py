"""`python -m aivos ...` runs the `aivos` command."""

from aivos.cli import main

if __name__ == "__main__":
    main()
