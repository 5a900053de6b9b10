"""A blockout scene to try MotionClone on: ground, grey boxes, a walking figure and a camera. No torch.

`build_blockout_scene` builds one of two animated clips into a scene, everything keyframed on every frame:

- ``"object"``: a figure made of primitives (torso, head, arms and legs parented to an empty) walks across the
  frame with a little bob and swinging limbs, seen by a static camera. Object motion.
- ``"camera"``: the same set without the figure, seen by a camera that dollies sideways and forward while it pans
  to keep the set centred. Camera motion.

The look is neutral Workbench: solid grey objects in varied shades (``color_type`` ``'OBJECT'``) in front of a
lighter background, 512 x 512 pixels, 8 frames per second (AnimateDiff's native rate), so one scene frame is one
model frame. Everything the builder makes lives in one collection, `COLLECTION_NAME`, which a second call removes
first: building twice gives the same scene as building once.
"""

import math
from collections.abc import Callable

import bmesh
import bpy
from mathutils import Vector

SCENE_KINDS = ("object", "camera")
COLLECTION_NAME = "MotionClone Blockout"
WORLD_NAME = "MotionClone Blockout World"
RESOLUTION = 512  # square: the model's native 512 x 512
FPS = 8
BACKGROUND = (0.82, 0.84, 0.86)  # lighter than every object, so the shapes read against it

# (name, location of the base centre, size x/y/z, grey level): the static set behind the walking line.
BOXES = (
    ("Box Left", (-3.0, 2.6, 0.0), (1.6, 1.6, 2.4), 0.30),
    ("Box Middle", (-0.4, 3.6, 0.0), (2.2, 1.4, 1.3), 0.50),
    ("Box Right", (2.6, 2.2, 0.0), (1.2, 1.2, 1.7), 0.22),
    ("Box Front", (3.6, -1.4, 0.0), (0.8, 0.8, 0.8), 0.42),
    ("Pillar", (1.1, 4.8, 0.0), (0.6, 0.6, 3.4), 0.36),
)
GROUND_GREY = 0.9
FIGURE_GREY = 0.12  # the darkest shape: the moving subject stands out

# The figure walks along +x at y = 0, seen side-on by a camera looking along +y.
WALK_START_X, WALK_END_X = -2.6, 2.6
STRIDES_PER_CLIP = 2.0  # full walk cycles (left and right step) over the clip
BOB_HEIGHT = 0.08
LIMB_SWING = 0.55  # radians, peak swing of the legs; the arms swing a little less, opposite the legs

STATIC_CAMERA = (Vector((0.0, -8.0, 1.7)), Vector((0.0, 0.0, 1.0)))  # location, point looked at
DOLLY_START = Vector((-3.8, -9.0, 1.6))
DOLLY_END = Vector((2.8, -6.0, 2.3))
DOLLY_TARGET = Vector((0.0, 2.0, 1.0))
CAMERA_LENS_MM = 35.0


def build_blockout_scene(scene: bpy.types.Scene, kind: str, frames: int) -> bpy.types.Object:
    """Build an animated blockout clip into a scene and make its camera the scene camera.

    Sets the frame range to 1..``frames``, the render size to 512 x 512 at 100 %, 8 fps, the Workbench engine with
    object-coloured solid shading, a light grey world and the Standard view transform. Objects go into the
    collection `COLLECTION_NAME` (replaced if it exists, with the objects, meshes, cameras and actions it held);
    nothing else in the scene is touched.

    Args:
        scene (`bpy.types.Scene`): the scene to build into; it need not be the active one.
        kind (`str`): ``"object"`` (a figure walks past a static camera) or ``"camera"`` (no figure; the camera
            dollies and pans), one of `SCENE_KINDS`.
        frames (`int`): length of the clip in frames, at least 2; keyframes are set on every frame from 1.

    Returns:
        `bpy.types.Object`: the camera, now ``scene.camera``.

    Raises:
        ValueError: ``kind`` is not one of `SCENE_KINDS`, or ``frames`` is below 2.
    """
    if kind not in SCENE_KINDS:
        raise ValueError(f"`kind` must be one of {', '.join(SCENE_KINDS)}, got {kind!r}.")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"`frames` must be an integer of at least 2, got {frames!r}.")
    remove_blockout(scene)
    collection = bpy.data.collections.new(COLLECTION_NAME)
    scene.collection.children.link(collection)
    add_set(collection)
    if kind == "object":
        add_walking_figure(collection, frames)
        camera = add_static_camera(collection)
    else:
        camera = add_dolly_camera(collection, frames)
    apply_look(scene, frames)
    scene.camera = camera
    scene.frame_set(1)
    return camera


def remove_blockout(scene: bpy.types.Scene) -> None:
    """Remove the blockout collection of a scene with everything it made (objects, their data and actions)."""
    collection = scene.collection.children.get(COLLECTION_NAME)
    if collection is None:
        return
    for obj in list(collection.objects):
        data = obj.data
        action = obj.animation_data.action if obj.animation_data else None
        bpy.data.objects.remove(obj)
        if isinstance(data, bpy.types.Mesh) and data.users == 0:
            bpy.data.meshes.remove(data)
        elif isinstance(data, bpy.types.Camera) and data.users == 0:
            bpy.data.cameras.remove(data)
        if action is not None and action.users == 0:
            bpy.data.actions.remove(action)
    bpy.data.collections.remove(collection)


def add_set(collection: bpy.types.Collection) -> None:
    """The static set: a ground plane and a few grey boxes behind the line the figure walks along."""
    ground = new_mesh_object(collection, "Ground", build_plane, GROUND_GREY)
    ground.scale = (200.0, 200.0, 1.0)  # far beyond the view: no edge shows
    for name, location, size, grey in BOXES:
        box = new_mesh_object(collection, name, build_box, grey)
        box.location = location
        box.scale = size


def add_walking_figure(collection: bpy.types.Collection, frames: int) -> bpy.types.Object:
    """A mannequin of primitives parented to an empty that walks across the frame; keyed on every frame."""
    root = bpy.data.objects.new("Figure", None)
    root.empty_display_type = "PLAIN_AXES"
    collection.objects.link(root)
    torso = new_mesh_object(collection, "Figure Torso", build_box, FIGURE_GREY, parent=root)
    torso.location, torso.scale = (0.0, 0.0, 0.95), (0.32, 0.5, 0.75)
    head = new_mesh_object(collection, "Figure Head", build_sphere, FIGURE_GREY, parent=root)
    head.location, head.scale = (0.0, 0.0, 1.92), (0.36, 0.36, 0.42)
    # Limbs hang from their joint (the mesh's top is its origin), so rotating them swings them like a pendulum.
    limbs = []
    for side, y in (("Left", 0.14), ("Right", -0.14)):
        leg = new_mesh_object(collection, f"Figure {side} Leg", build_limb, FIGURE_GREY, parent=root)
        leg.location, leg.scale = (0.0, y, 0.95), (0.18, 0.18, 0.95)
        arm = new_mesh_object(collection, f"Figure {side} Arm", build_limb, FIGURE_GREY, parent=root)
        arm.location, arm.scale = (0.0, y * 2.3, 1.62), (0.12, 0.12, 0.7)
        limbs.append((leg, arm, 1.0 if side == "Left" else -1.0))
    for frame in range(1, frames + 1):
        progress = (frame - 1) / (frames - 1)
        phase = 2.0 * math.pi * STRIDES_PER_CLIP * progress
        root.location = (WALK_START_X + (WALK_END_X - WALK_START_X) * progress, 0.0, BOB_HEIGHT * abs(math.sin(phase)))
        root.keyframe_insert("location", frame=frame)
        for leg, arm, sign in limbs:
            leg.rotation_euler = (0.0, sign * LIMB_SWING * math.sin(phase), 0.0)
            arm.rotation_euler = (0.0, -sign * 0.8 * LIMB_SWING * math.sin(phase), 0.0)
            leg.keyframe_insert("rotation_euler", frame=frame)
            arm.keyframe_insert("rotation_euler", frame=frame)
    return root


def add_static_camera(collection: bpy.types.Collection) -> bpy.types.Object:
    """A camera that stands still, looking at the walking line side-on."""
    camera = new_camera(collection)
    location, target = STATIC_CAMERA
    camera.location = location
    camera.rotation_euler = look_at_rotation(location, target)
    return camera


def add_dolly_camera(collection: bpy.types.Collection, frames: int) -> bpy.types.Object:
    """A camera that moves sideways and in (dolly) while it turns to keep the set centred (pan); keyed per frame."""
    camera = new_camera(collection)
    for frame in range(1, frames + 1):
        progress = (frame - 1) / (frames - 1)
        eased = 0.5 - 0.5 * math.cos(math.pi * progress)  # slow in, slow out, like a real dolly move
        location = DOLLY_START.lerp(DOLLY_END, eased)
        camera.location = location
        camera.rotation_euler = look_at_rotation(location, DOLLY_TARGET)
        camera.keyframe_insert("location", frame=frame)
        camera.keyframe_insert("rotation_euler", frame=frame)
    return camera


def new_camera(collection: bpy.types.Collection) -> bpy.types.Object:
    data = bpy.data.cameras.new("Blockout Camera")
    data.lens = CAMERA_LENS_MM
    camera = bpy.data.objects.new("Blockout Camera", data)
    collection.objects.link(camera)
    return camera


def look_at_rotation(location: Vector, target: Vector) -> tuple[float, float, float]:
    """Euler rotation of a camera at ``location`` that looks at ``target`` with the world's Z up."""
    return tuple((target - location).to_track_quat("-Z", "Y").to_euler())


def apply_look(scene: bpy.types.Scene, frames: int) -> None:
    """Frame range, size, frame rate and the neutral grey Workbench look."""
    scene.frame_start, scene.frame_end = 1, frames
    render = scene.render
    render.resolution_x = render.resolution_y = RESOLUTION
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.fps, render.fps_base = FPS, 1.0
    render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.color_type = "OBJECT"
    shading.show_shadows = True
    shading.shadow_intensity = 0.4
    shading.show_cavity = False
    world = bpy.data.worlds.get(WORLD_NAME) or bpy.data.worlds.new(WORLD_NAME)
    world.color = BACKGROUND  # Workbench renders the world colour as the background
    scene.world = world
    # Standard shows the object greys as they are; AgX and Filmic would flatten them towards mid grey.
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"


# ---- meshes --------------------------------------------------------------------------------------------------------
def new_mesh_object(
    collection: bpy.types.Collection,
    name: str,
    build: Callable[[bmesh.types.BMesh], None],
    grey: float,
    parent: bpy.types.Object | None = None,
) -> bpy.types.Object:
    """A new object with a mesh made by ``build(bm)``, a grey object colour, linked into ``collection``."""
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    try:
        build(bm)
        bm.to_mesh(mesh)
    finally:
        bm.free()
    obj = bpy.data.objects.new(name, mesh)
    obj.color = (grey, grey, grey, 1.0)
    obj.parent = parent
    collection.objects.link(obj)
    return obj


def build_plane(bm: bmesh.types.BMesh) -> None:
    """A 1 x 1 plane at z = 0."""
    bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=0.5)


def build_box(bm: bmesh.types.BMesh) -> None:
    """A 1 x 1 x 1 box standing on z = 0, centred in x and y."""
    bmesh.ops.create_cube(bm, size=1.0)
    bmesh.ops.translate(bm, vec=(0.0, 0.0, 0.5), verts=bm.verts)


def build_sphere(bm: bmesh.types.BMesh) -> None:
    """A sphere of diameter 1 around the origin."""
    bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=0.5)


def build_limb(bm: bmesh.types.BMesh) -> None:
    """A cylinder of diameter 1 and length 1 hanging below the origin (the joint)."""
    bmesh.ops.create_cone(bm, cap_ends=True, segments=16, radius1=0.5, radius2=0.5, depth=1.0)
    bmesh.ops.translate(bm, vec=(0.0, 0.0, -0.5), verts=bm.verts)
