"""``python -m sschsr.train`` is ``sschsr-train``."""

from sschsr.cli.train import main, train  # noqa: F401

if __name__ == "__main__":
    main()
