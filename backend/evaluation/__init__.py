"""`motionclone evaluate`: motion fidelity, subject adherence and CLIP metrics of a result. No bpy.

tracks.py           point tracks: OpenCV pyramidal Lucas-Kanade with a forward-backward check (or CoTracker)
motion_fidelity.py  DMT's motion fidelity, symmetric and as DMT's released code computes it
adherence.py        subject colour and class adherence (heuristics for the built-in blocks model)
subject_mask.py     the subject-mask network those two read the subject's region with
clip_metrics.py     CLIP text alignment and temporal consistency from a local checkpoint
report.py           metrics.json and tracks.png
evaluate.py         `evaluate(reference, result, ...)`: reads both clips, runs everything, writes the files
"""

from .evaluate import default_out_dir, evaluate, load_result, sample_reference

__all__ = ["default_out_dir", "evaluate", "load_result", "sample_reference"]
