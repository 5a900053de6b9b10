"""The server's bound ROUTER socket, opened before the model loads. No bpy, no torch.

`motionclone serve` binds first and says where (so a launcher learns the endpoint at once, also with `--port 0`), then
loads the model. Clients that connect meanwhile are held by ZeroMQ: their Hello waits in the socket's queue and is
answered with a Welcome once the server's loop runs.
"""

import errno
import logging
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from ..errors import MotionCloneError
from .config import ServerConfig
from .security import check_bind_allowed, secure_server_socket

log = logging.getLogger(__name__)


class BindError(MotionCloneError):
    """The server socket could not bind its endpoint (bad endpoint, or address not available)."""


class PortInUseError(BindError):
    """Another program already listens on the port asked for."""


@dataclass
class Listener:
    """A bound ROUTER socket with its context and, with CurveZMQ keys, the authenticator thread."""

    context: zmq.Context
    socket: zmq.Socket
    authenticator: ThreadAuthenticator | None
    endpoint: str

    def close(self, linger_ms: int = 0) -> None:
        """Stop the authenticator, close the socket and end the context, which waits up to `linger_ms` for messages
        still on their way out. Safe to call twice."""
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        if not self.socket.closed:
            self.socket.close(linger=linger_ms)
        if not self.context.closed:
            self.context.term()


def open_listener(config: ServerConfig) -> Listener:
    """Bind a ROUTER socket on `config.bind` with the message limit and, with `config.keys_dir`, CurveZMQ.

    Returns:
        The bound `Listener`; its `endpoint` is the real one (a port chosen by the system for `:*` or `:0`).

    Raises:
        InsecureBindError: a non-loopback endpoint without keys or `insecure`.
        PortInUseError: the port is taken; the message names it and what to do.
        BindError: any other bind failure, with ZeroMQ's reason.
    """
    check_bind_allowed(config.bind, config.keys_dir, config.insecure)
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.linger = 0
    # Only for an IPv6 address: with it on, an IPv4 bind reports itself as [::ffff:127.0.0.1], which clients would
    # then be told to connect to.
    socket.ipv6 = "[" in config.bind
    socket.setsockopt(zmq.MAXMSGSIZE, config.limits.max_message_bytes)
    authenticator = None
    try:
        if config.keys_dir is not None:
            authenticator = secure_server_socket(context, socket, Path(config.keys_dir))
        socket.bind(config.bind)
    except BaseException as error:
        Listener(context, socket, authenticator, config.bind).close()
        if isinstance(error, zmq.ZMQError):
            raise bind_error(config.bind, error) from error
        raise
    return Listener(context, socket, authenticator, socket.getsockopt_string(zmq.LAST_ENDPOINT))


def bind_error(endpoint: str, error: zmq.ZMQError) -> BindError:
    """The error to raise for a failed bind of `endpoint`, saying what to do next."""
    if error.errno == errno.EADDRINUSE:
        port = endpoint.rsplit(":", 1)[-1]
        return PortInUseError(
            f"port {port} is already in use, so the backend cannot listen on {endpoint}. Another MotionClone backend "
            f"may be running there (`motionclone status --server {endpoint}` tells); otherwise a different program "
            "holds the port. Stop that program, or start with another port: `--port N`, or `--port 0` for a free "
            "one the system picks (the first line printed names it)."
        )
    return BindError(
        f"cannot listen on {endpoint}: {error.strerror}. Pass an endpoint such as tcp://127.0.0.1:5555 with --bind, "
        "or just a port with --port."
    )
