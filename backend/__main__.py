"""`python -m motionclone.backend` runs the CLI."""

from .cli import main

if __name__ == "__main__":  # not when a spawned child process (the Ray driver) imports this module
    raise SystemExit(main())
