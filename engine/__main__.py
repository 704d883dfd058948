"""`python -m engine ...` (used by `torchrun -m engine features ...`)."""

from engine.cli import main

if __name__ == "__main__":
    main()
