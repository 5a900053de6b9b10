"""`python -m motionclone.backend` runs the CLI."""

from .cli import main

raise SystemExit(main())
