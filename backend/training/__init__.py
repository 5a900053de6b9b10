"""Training the small "blocks" text-to-video model: procedural data set, and (elsewhere) the trainer."""
