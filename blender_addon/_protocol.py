"""The one place the add-on gets the MotionClone wire protocol from. No torch.

Inside the extension zip, scripts/build_extension.py bundles the repository's protocol/ package next to this file,
so it imports as `<add-on package>.protocol` (for example `bl_ext.user_default.motionclone.protocol`) and needs
nothing from the project. In a development checkout the add-on folder has no protocol/ of its own, and the project's
installed package `motionclone.protocol` is used instead.

Only a missing bundled subpackage selects the fallback: an error raised while importing a bundled copy that is there
propagates, rather than being hidden behind the development package.
"""

import importlib.util

__all__ = ["BUNDLED", "client", "codec", "endpoints", "errors", "keys", "messages", "stages", "windows"]


def _bundled_protocol_present() -> bool:
    if not __package__:  # imported as a top-level module: there is no package to hold a bundled copy
        return False
    return importlib.util.find_spec(f"{__package__}.protocol") is not None


BUNDLED: bool = _bundled_protocol_present()
"""True when the protocol comes from the copy bundled inside the add-on, False for `motionclone.protocol`."""

if BUNDLED:  # inside the extension zip, protocol/ is bundled next to this file
    from .protocol import client, codec, endpoints, errors, keys, messages, stages, windows
else:  # a development checkout: the project's installed package
    try:
        from motionclone.protocol import client, codec, endpoints, errors, keys, messages, stages, windows
    except ModuleNotFoundError as error:
        if error.name not in ("motionclone", "motionclone.protocol"):
            raise
        raise ModuleNotFoundError(
            f"The MotionClone protocol is neither bundled in {__package__ or 'the add-on'} nor installed as "
            "motionclone.protocol: install the extension zip built by scripts/build_extension.py, or run from the "
            "project's environment (pip install -e .)",
            name=error.name,
        ) from error
