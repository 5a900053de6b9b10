"""MotionClone wire protocol. Standard library, msgpack, pyzmq and numpy only: it runs inside Blender's Python.

No torch, no bpy. Internal imports are relative so that the package also works when bundled inside the add-on.
"""
