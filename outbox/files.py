"""Files only the service's user may read: the outbox, its backups and the metrics hold user ids
and audience names.

New files are created 0600 and new folders 0700 whatever the umask (the systemd units set
`UMask=0077`; a shell, a container or a hand-started `diy-wsgi serve` usually has 0022, which
would make them readable by every user of the machine). What exists already keeps its mode.
"""
import os

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def open_private(path, flags=os.O_WRONLY, *, new=False):
    """A descriptor of `path`, created readable and writable by its owner alone; with `new`, a
    file that exists is an error (FileExistsError), else it is opened as it is."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        if new:
            raise
        return os.open(path, flags)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_private(path):
    """Create `path` empty and private unless it exists; whether it was created."""
    try:
        os.close(open_private(path, new=True))
    except FileExistsError:
        return False
    return True


def make_private_folder(path):
    """Create the folder `path` (with missing parents) for its owner alone, unless it exists."""
    try:
        os.makedirs(path, PRIVATE_FOLDER)
    except FileExistsError:
        return
    os.chmod(path, PRIVATE_FOLDER)
