"""The backend server: ROUTER socket, FIFO job queue, one engine worker, results kept on disk. No bpy."""

from .config import ServerConfig
from .server import Server, serve

__all__ = ["Server", "ServerConfig", "serve"]
