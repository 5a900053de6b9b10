"""Who may bind where, and CurveZMQ setup for the server socket. No bpy."""

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ...protocol.endpoints import is_loopback_endpoint
from ...protocol.keys import CLIENTS_DIR, load_key_pair, server_key_paths
from ..errors import MotionCloneError

log = logging.getLogger(__name__)


class InsecureBindError(MotionCloneError):
    """A non-loopback bind was asked for without keys and without --insecure."""


def check_bind_allowed(endpoint: str, keys_dir: Path | None, insecure: bool) -> None:
    """Refuse a non-loopback bind without keys unless `insecure`; warn loudly when insecure."""
    if is_loopback_endpoint(endpoint) or keys_dir is not None:
        return
    if not insecure:
        raise InsecureBindError(
            f"Refusing to bind {endpoint} without encryption: anyone on the network could submit jobs. "
            "Create keys with `motionclone keygen DIR` and start with `--keys DIR` (clients then need DIR/server.key), "
            "or bind to tcp://127.0.0.1 and use an SSH tunnel, or pass --insecure on a network you trust."
        )
    log.warning(
        "INSECURE: %s is bound without CurveZMQ keys. Anyone who can reach this port can run jobs and read results.",
        endpoint,
    )


def secure_server_socket(context: zmq.Context, socket: zmq.Socket, keys_dir: Path) -> ThreadAuthenticator:
    """Make `socket` a CurveZMQ server that admits only the client keys in keys_dir/clients. Returns the
    authenticator thread, which the caller stops on shutdown."""
    public, secret = load_key_pair(server_key_paths(keys_dir)[1])
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    clients = keys_dir / CLIENTS_DIR
    if not clients.is_dir():
        authenticator.stop()
        raise MotionCloneError(f"No client keys in {clients}: create them with `motionclone keygen {keys_dir}`.")
    authenticator.configure_curve(domain="*", location=str(clients))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator
