"""Add-on preferences: which backend (a local one the add-on starts, or a remote endpoint) and where results go.
No torch."""

import os
from pathlib import Path

import bpy

from . import compat, local_backend
from ._protocol import endpoints

BACKEND_MODE_ITEMS = [
    ("REMOTE", "Remote (endpoint and keys)", "Connect to a `motionclone serve` you run yourself, here or on a server"),
    ("LOCAL", "Local (started by the add-on)", "The add-on starts, watches and stops a backend on this computer"),
]
PRESET_ITEMS = [
    ("blocks", "Built-in (blocks)", "The built-in trained model: CPU, 64 x 64, no download"),
    ("tiny", "Tiny (tests)", "A tiny random model: checks the set-up in seconds, the pictures are noise"),
    ("sd15-animatediff-v3", "SD 1.5 + AnimateDiff v3", "Real weights on a GPU: set the weight folders below"),
]
DEVICE_ITEMS = [
    ("AUTO", "Automatic", "CUDA when the backend finds a GPU, else the CPU"),
    ("cpu", "CPU", "Run on the processor (slow for real weights)"),
    ("cuda", "CUDA GPU", "Run on an NVIDIA GPU"),
]
DTYPE_ITEMS = [
    ("AUTO", "Preset default", "The precision the preset chooses"),
    ("float32", "float32", "Full precision"),
    ("float16", "float16", "Half precision: half the GPU memory"),
    ("bfloat16", "bfloat16", "Half precision with float32's range (recent GPUs)"),
]


class MOTIONCLONE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_mode: bpy.props.EnumProperty(name="Backend", items=BACKEND_MODE_ITEMS, default="REMOTE")
    local_environment: bpy.props.StringProperty(
        name="Backend Environment",
        subtype="DIR_PATH",
        description="Folder of the Python environment the backend was installed into (it holds bin/motionclone, "
        "Scripts/motionclone.exe on Windows), or the motionclone program itself",
    )
    local_preset: bpy.props.EnumProperty(name="Model", items=PRESET_ITEMS, default="blocks")
    local_base: bpy.props.StringProperty(
        name="Base Model", subtype="DIR_PATH", description="SD-1.5 base model folder (diffusers layout) or hub id"
    )
    local_motion_adapter: bpy.props.StringProperty(
        name="Motion Adapter", subtype="DIR_PATH", description="AnimateDiff v3 motion adapter folder or hub id"
    )
    local_checkpoint: bpy.props.StringProperty(
        name="Checkpoint", subtype="FILE_PATH", description="Optional DreamBooth checkpoint (.safetensors)"
    )
    local_device: bpy.props.EnumProperty(name="Device", items=DEVICE_ITEMS, default="AUTO")
    local_dtype: bpy.props.EnumProperty(name="Precision", items=DTYPE_ITEMS, default="AUTO")
    local_results_dir: bpy.props.StringProperty(
        name="Backend Results",
        subtype="DIR_PATH",
        description="Where the local backend keeps finished results, its log and its state file; empty: the "
        "add-on's user data folder",
    )
    keep_running: bpy.props.BoolProperty(
        name="Keep Running",
        update=lambda self, _context: keep_running_changed(self),
        description="Leave the local backend running when Blender quits or the add-on is disabled, so the next "
        "Blender finds it with its model loaded (applies from the next start)",
    )
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
        description=(
            "Seconds without an answer before the backend counts as unreachable (the heartbeat is answered while a "
            "reference or a result is on its way, so a slow network only needs more when its buffers hold pings "
            "back for seconds)"
        ),
    )
    output_dir: bpy.props.StringProperty(
        name="Output folder",
        subtype="DIR_PATH",
        options=compat.blend_relative_path_options(),
        description="Where results are written; empty: next to the .blend file, or for an unsaved file the add-on's "
        "user folder, which Blender deletes when the add-on is uninstalled",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.row().prop(self, "backend_mode", expand=True)
        col = layout.column()
        if self.backend_mode == "LOCAL":
            self.draw_local(col)
        else:
            col.prop(self, "endpoint")
            col.prop(self, "server_key_file")
            col.prop(self, "client_key_file")
        col.prop(self, "timeout")
        col.prop(self, "output_dir")
        layout.operator("motionclone.test_connection", icon="LINKED")

    def draw_local(self, col: bpy.types.UILayout) -> None:
        row = col.row(align=True)
        row.prop(self, "local_environment")
        row.operator("motionclone.check_backend", text="Check", icon="VIEWZOOM")
        from .session import get_session  # the session imports this module

        for line in get_session().local_check:
            col.label(text=line, icon="INFO")
        col.prop(self, "local_preset")
        if self.local_preset == "sd15-animatediff-v3":
            sub = col.column()
            sub.prop(self, "local_base")
            sub.prop(self, "local_motion_adapter")
            sub.prop(self, "local_checkpoint")
        row = col.row(align=True)
        row.prop(self, "local_device")
        row.prop(self, "local_dtype")
        col.prop(self, "local_results_dir")
        col.prop(self, "keep_running")
        local = get_session().local
        col.label(text=local.status_line(), icon="ERROR" if local.state == "crashed" else "INFO")
        row = col.row(align=True)
        row.operator("motionclone.start_backend", icon="PLAY")
        row.operator("motionclone.stop_backend", icon="PAUSE")


def keep_running_changed(prefs: MOTIONCLONE_AP_preferences) -> None:
    # The session reads it when the add-on closes, possibly at exit, when the preferences can no longer be read.
    from .session import get_session  # the session imports this module

    get_session().local.keep_running = prefs.keep_running


def get_preferences(context: bpy.types.Context) -> MOTIONCLONE_AP_preferences:
    return context.preferences.addons[__package__].preferences


def user_folder(name: str) -> Path:
    """`name` in the add-on's user data folder, which survives upgrades; created if missing."""
    try:
        return Path(bpy.utils.extension_path_user(__package__, path=name, create=True))
    except ValueError:  # not installed as an extension (a development checkout): Blender's user data folder
        folder = Path(bpy.utils.user_resource("DATAFILES", path="motionclone", create=True)) / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def usable_output_dir(context: bpy.types.Context) -> str:
    """The Output folder preference, or "" when it is unset, or relative to a .blend that is not saved yet."""
    output_dir = get_preferences(context).output_dir
    return "" if output_dir.startswith("//") and not bpy.data.filepath else output_dir


def results_outlive_addon(context: bpy.types.Context) -> bool:
    """False when results would go to the add-on's user folder (no Output folder set, the .blend not saved), which
    Blender deletes when the add-on is uninstalled."""
    return bool(usable_output_dir(context) or bpy.data.filepath)


def output_root(context: bpy.types.Context) -> Path:
    """Results folder: the preference, else `//motionclone` next to a saved .blend, else the add-on's user folder.

    A preference relative to the .blend (`//...`) needs a saved file: before that, Blender would resolve it against
    its own working folder, so the user folder is used instead."""
    if not bpy.data.filepath:
        return unsaved_output_root(context)
    if output_dir := get_preferences(context).output_dir:
        return Path(bpy.path.abspath(output_dir))
    return Path(bpy.path.abspath("//motionclone"))


def unsaved_output_root(context: bpy.types.Context) -> Path:
    """Where results of an unsaved .blend go, also once another file is open: the Output folder preference unless
    it is relative to the .blend, else the add-on's user folder."""
    output_dir = get_preferences(context).output_dir
    if output_dir and not output_dir.startswith("//"):
        return Path(bpy.path.abspath(output_dir))
    return user_folder("results")


def local_settings(context: bpy.types.Context) -> local_backend.LocalSettings:
    """A plain copy of the local backend's preferences (paths made absolute)."""
    prefs = get_preferences(context)

    def path(value: str) -> str:
        return os.path.normpath(bpy.path.abspath(value)) if value.strip() else ""

    def weights(value: str) -> str:
        # A folder or file as an absolute path; anything else may be a model hub id, passed as written.
        absolute = bpy.path.abspath(value.strip()) if value.strip() else ""
        return os.path.normpath(absolute) if absolute and os.path.exists(absolute) else value.strip()

    return local_backend.LocalSettings(
        environment=path(prefs.local_environment),
        results_dir=Path(path(prefs.local_results_dir)) if prefs.local_results_dir else user_folder("backend"),
        preset=prefs.local_preset,
        device="" if prefs.local_device == "AUTO" else prefs.local_device,
        dtype="" if prefs.local_dtype == "AUTO" else prefs.local_dtype,
        base=weights(prefs.local_base),
        motion_adapter=weights(prefs.local_motion_adapter),
        checkpoint=weights(prefs.local_checkpoint),
        keep_running=prefs.keep_running,
    )


def online_access_problem(endpoint: str) -> str | None:
    """Why `endpoint` may not be used under Blender's online-access setting, or None. Loopback always works."""
    if endpoints.is_loopback_endpoint(endpoint) or getattr(bpy.app, "online_access", True):
        return None
    how = (
        "it was turned off from the command line (--offline-mode)"
        if getattr(bpy.app, "online_access_override", False)
        else "enable Allow Online Access in Preferences > System > Network"
    )
    return f"Blender's online access is off, so the remote backend {endpoint} cannot be reached: {how}."


def key_paths(preferences: MOTIONCLONE_AP_preferences) -> tuple[str | None, str | None]:
    server = bpy.path.abspath(preferences.server_key_file) if preferences.server_key_file else None
    client = bpy.path.abspath(preferences.client_key_file) if preferences.client_key_file else None
    return (os.path.normpath(server) if server else None, os.path.normpath(client) if client else None)


classes = (MOTIONCLONE_AP_preferences,)
