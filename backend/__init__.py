"""MotionClone backend: models, engine, server and CLI. Imports the ML stack; never imports bpy or the add-on.

Importing this package itself is cheap: torch and diffusers load only with the modules that use them, so
`motionclone info` and the first line of `motionclone serve` come before the ML stack is imported.
"""

# The backend's version: what Welcome, result metadata, the state file and `motionclone info` report.
# Kept equal to [project].version in pyproject.toml (tests/test_packaging.py checks it).
__version__ = "0.1.0"
