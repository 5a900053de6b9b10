from tests.server_process import reference_frames, start_server

__all__ = ["reference_frames", "start_server"]
