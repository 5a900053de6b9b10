"""MotionClone backend: models, engine, server and CLI. Imports the ML stack; never imports bpy or the add-on."""
