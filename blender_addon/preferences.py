"""Add-on preferences: where the backend is and where results go. No torch."""

import os
from pathlib import Path

import bpy

from ._protocol import endpoints


class MOTIONCLONE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    endpoint: bpy.props.StringProperty(
        name="Backend",
        default=endpoints.DEFAULT_ENDPOINT,
        description="ZeroMQ endpoint of `motionclone serve`, e.g. tcp://127.0.0.1:5555 or tcp://gpu-box:5555",
    )
    server_key_file: bpy.props.StringProperty(
        name="Server key", subtype="FILE_PATH", description="server.key from `motionclone keygen` (remote backends)"
    )
    client_key_file: bpy.props.StringProperty(
        name="Client key",
        subtype="FILE_PATH",
        description="This machine's clients/<name>.key_secret from `motionclone keygen` (remote backends)",
    )
    timeout: bpy.props.FloatProperty(
        name="Timeout",
        default=5.0,
        min=1.0,
        max=120.0,
        unit="TIME_ABSOLUTE",
        description="Seconds without an answer before the backend counts as unreachable",
    )
    output_dir: bpy.props.StringProperty(
        name="Output folder",
        subtype="DIR_PATH",
        description="Where results are written; empty: next to the .blend file (or the add-on's user folder)",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "endpoint")
        col.prop(self, "timeout")
        col.prop(self, "server_key_file")
        col.prop(self, "client_key_file")
        col.prop(self, "output_dir")
        layout.operator("motionclone.test_connection", icon="LINKED")


def get_preferences(context: bpy.types.Context) -> MOTIONCLONE_AP_preferences:
    return context.preferences.addons[__package__].preferences


def output_root(context: bpy.types.Context) -> Path:
    """Results folder: the preference, else `//motionclone` next to a saved .blend, else the add-on's user folder."""
    preferences = get_preferences(context)
    if preferences.output_dir:
        return Path(bpy.path.abspath(preferences.output_dir))
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//motionclone"))
    try:
        return Path(bpy.utils.extension_path_user(__package__, path="results", create=True))
    except ValueError:  # not installed as an extension (a development checkout): Blender's user data folder
        return Path(bpy.utils.user_resource("DATAFILES", path="motionclone", create=True)) / "results"


def online_access_problem(endpoint: str) -> str | None:
    """Why `endpoint` may not be used under Blender's online-access setting, or None. Loopback always works."""
    if endpoints.is_loopback_endpoint(endpoint) or getattr(bpy.app, "online_access", True):
        return None
    how = (
        "it was turned off from the command line (--offline-mode)"
        if getattr(bpy.app, "online_access_overriden", False)
        else "enable Allow Online Access in Preferences > System > Network"
    )
    return f"Blender's online access is off, so the remote backend {endpoint} cannot be reached: {how}."


def key_paths(preferences: MOTIONCLONE_AP_preferences) -> tuple[str | None, str | None]:
    server = bpy.path.abspath(preferences.server_key_file) if preferences.server_key_file else None
    client = bpy.path.abspath(preferences.client_key_file) if preferences.client_key_file else None
    return (os.path.normpath(server) if server else None, os.path.normpath(client) if client else None)


classes = (MOTIONCLONE_AP_preferences,)
