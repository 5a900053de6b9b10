"""CurveZMQ key files for the MotionClone server and its clients, over pyzmq's zmq.auth. No bpy, no torch.

Layout of a key folder (what `motionclone keygen` writes and `motionclone serve --keys DIR` reads):

    DIR/server.key                   the server's public key: give it to every client
    DIR/server.key_secret            the server's key pair: stays on the server machine
    DIR/clients/<name>.key           a client's public key: the server accepts clients whose key is in clients/
    DIR/clients/<name>.key_secret    that client's key pair: copy it to the client machine

Keys are Z85 text (40 bytes), as zmq.curve_keypair() makes them and zmq socket options take them.
`curve_client_keys` checks and completes the three keys a client socket needs.
"""

import os
import re
import struct
import tempfile
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

SERVER_KEY_NAME = "server"
CLIENTS_DIR = "clients"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"

# A client name becomes a file name, so keep it to one plain path component.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def server_key_paths(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where the server's key files live in a key folder.

    Args:
        directory: the key folder.

    Returns:
        (public key path, secret key path): DIR/server.key and DIR/server.key_secret.
    """
    folder = Path(directory)
    return folder / (SERVER_KEY_NAME + PUBLIC_SUFFIX), folder / (SERVER_KEY_NAME + SECRET_SUFFIX)


def client_key_paths(directory: str | os.PathLike[str], name: str = "client") -> tuple[Path, Path]:
    """Where a client's key files live in a key folder.

    Args:
        directory: the key folder (the one that holds server.key, not its clients/ subfolder).
        name: the client's name; letters, digits, `_`, `.` and `-`, starting with a letter or digit.

    Returns:
        (public key path, secret key path): DIR/clients/<name>.key and DIR/clients/<name>.key_secret.

    Raises:
        ValueError: `name` is not a plain file name.
    """
    _check_name(name)
    clients = Path(directory) / CLIENTS_DIR
    return clients / (name + PUBLIC_SUFFIX), clients / (name + SECRET_SUFFIX)


def write_server_keys(directory: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path]:
    """Create the server's key pair in DIR (made if missing).

    Args:
        directory: the key folder.
        overwrite: replace existing server keys. Off by default: a new server key locks out every client that holds
            the old public key.

    Returns:
        (public key path, secret key path).

    Raises:
        FileExistsError: server keys exist and `overwrite` is False.
    """
    public_path, secret_path = server_key_paths(directory)
    return _write_pair(Path(directory), SERVER_KEY_NAME, public_path, secret_path, overwrite)


def write_client_keys(
    directory: str | os.PathLike[str], name: str = "client", *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Create a client's key pair in DIR/clients/ (made if missing).

    Args:
        directory: the key folder (the one that holds server.key).
        name: the client's name, used as the file name (see `client_key_paths`).
        overwrite: replace an existing pair of that name.

    Returns:
        (public key path, secret key path).

    Raises:
        ValueError: `name` is not a plain file name.
        FileExistsError: keys of that name exist and `overwrite` is False.
    """
    public_path, secret_path = client_key_paths(directory, name)
    return _write_pair(Path(directory) / CLIENTS_DIR, name, public_path, secret_path, overwrite)


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """Read the public key from a key file (either the .key or the .key_secret file).

    Args:
        path: the key file.

    Returns:
        The Z85 public key (40 bytes).

    Raises:
        ValueError: the file is missing or holds no public key.
    """
    public, _ = _load(path)
    return public


def load_key_pair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """Read a key pair from a .key_secret file.

    Args:
        path: the secret key file, e.g. DIR/clients/<name>.key_secret.

    Returns:
        (public key, secret key), both Z85 (40 bytes).

    Raises:
        ValueError: the file is missing or holds no secret key (a .key file has only the public half).
    """
    public, secret = _load(path)
    if secret is None:
        raise ValueError(
            f"key file {os.fspath(path)!r} holds no secret key; pass the {SECRET_SUFFIX} file, not the "
            f"{PUBLIC_SUFFIX} file"
        )
    return public, secret


def curve_client_keys(
    server_public_key: bytes | None, client_secret_key: bytes | None = None, client_public_key: bytes | None = None
) -> tuple[bytes, bytes, bytes] | None:
    """Check and complete the keys a client socket needs for CurveZMQ.

    Args:
        server_public_key: the server's public key; None for a plain (unencrypted) connection.
        client_secret_key: the client's secret key; None makes a fresh pair (only servers that allow any client
            accept it).
        client_public_key: the client's public key; derived from the secret key when None.

    Returns:
        (server public key, client public key, client secret key), all Z85; None without a server key.

    Raises:
        ValueError: a key is not a Z85 key, client keys come without a server key, or a public key without its
            secret key or with another pair's.
    """
    for name, key in (
        ("server_public_key", server_public_key),
        ("client_secret_key", client_secret_key),
        ("client_public_key", client_public_key),
    ):
        if key is not None:
            _check_z85_key(name, key)
    if server_public_key is None:
        if client_secret_key is not None or client_public_key is not None:
            raise ValueError("client keys need `server_public_key` too: CurveZMQ authenticates both ends")
        return None
    if client_secret_key is None:
        if client_public_key is not None:
            raise ValueError("`client_public_key` was given without `client_secret_key`")
        client_public_key, client_secret_key = zmq.curve_keypair()
    elif client_public_key is None:
        client_public_key = zmq.curve_public(client_secret_key)
    elif zmq.curve_public(client_secret_key) != client_public_key:
        # Otherwise the handshake fails without a word, and the server key would look to blame.
        raise ValueError("`client_public_key` is not the public half of `client_secret_key`: pass one key pair")
    return server_public_key, client_public_key, client_secret_key


def _check_z85_key(name: str, key: bytes) -> None:
    # Checked here, because a bad key would otherwise surface as EINVAL from a socket option on the I/O thread.
    try:
        valid = isinstance(key, bytes) and len(key) == 40 and len(z85.decode(key)) == 32
    except (KeyError, struct.error):
        valid = False
    if not valid:
        raise ValueError(f"`{name}` must be a Z85 CurveZMQ key (40 characters), got {key!r:.60}")


def _load(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    # zmq.auth raises OSError for a missing file and ValueError without a public key: one clear message for both.
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot read a CurveZMQ key from {os.fspath(path)!r}: {error}. Create keys with `motionclone keygen`."
        ) from error


def _write_pair(folder: Path, name: str, public_path: Path, secret_path: Path, overwrite: bool) -> tuple[Path, Path]:
    if not overwrite and (public_path.exists() or secret_path.exists()):
        raise FileExistsError(f"keys already exist at {public_path}; pass overwrite=True to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    # The secret half must never be readable by other users of the machine: zmq writes it with the umask's rights,
    # so it is made in a folder only this user can enter, made private there, and then moved into place.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".keygen-") as private:
        made_public, made_secret = (Path(made) for made in zmq.auth.create_certificates(private, name))
        made_secret.chmod(0o600)
        os.replace(made_secret, secret_path)
        os.replace(made_public, public_path)
    return public_path, secret_path


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"`name` must be 1 to 64 letters, digits, '_', '.' or '-' starting with a letter or digit, got {name!r}"
        )
