"""The store lock: one writer at a time, safe on the shared filesystems clusters use.

Every command that writes a store (``generate``, ``generate --resume``, ``split``,
``verify --repair``) holds the lock for as long as it writes. The lock is a file beside the
store, ``<store>.lock`` (``dataset.zarr.lock``), created with ``O_CREAT | O_EXCL``: exactly one
of several racing creators succeeds, on a local disk and on NFS (v3 and later) and Lustre alike,
where POSIX ``fcntl`` locks depend on a lock daemon and ``flock`` may be local to one client.
It is beside the store rather than inside it, so that a run that creates a new store is
serialised too, and so that nothing but the store's own data lives under the store.

The file holds JSON: ``host``, ``pid``, the process start time (``pid_start``, Linux), the
wall-clock ``started_at``, a random ``token`` and the ``lease_s``. While it holds the lock, a
daemon thread touches the file every ``lease_s / 4`` seconds (its mtime is the lease). A lock is
*stale*, and taken over, when its holder is gone:

* on the same host: the pid does not exist, or it is a different process (another start time);
* on another host: the file's mtime is older than ``lease_s``, measured against the mtime of a
  file just written beside it (the file server's clock, not this machine's).

Take-over is serialised by a second ``O_EXCL`` file (``<store>.lock.takeover``): the one that
creates it re-reads the lock, removes it only if it still holds the stale token, and creates
its own. A takeover file older than 30 s (its creator died between two system calls) is removed.

Limits: a holder that is alive but hung keeps its lease on its own host (its pid exists) and on
other hosts while its refresh thread runs; a holder whose machine is suspended for longer than
the lease may find its lock taken over (it warns when it notices). NFS attribute caching delays
what another client sees of the mtime by up to ``actimeo`` (default at most 60 s), well inside
the default lease of 120 s + its refresh period.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faket_dask.errors import InputError

__all__ = [
    "DEFAULT_LEASE_S",
    "StoreLock",
    "StoreLockedError",
    "holder_info",
    "lock_path",
    "store_lock",
]

DEFAULT_LEASE_S = 120.0
TAKEOVER_STALE_S = 30.0


class StoreLockedError(InputError):
    """Another live run holds the store's lock (exit code 2)."""


def lock_path(store: str | os.PathLike[str]) -> Path:
    """``<store>.lock`` beside the store (the store path resolved)."""
    p = Path(store).expanduser().resolve()
    return p.with_name(p.name + ".lock")


def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or ``None``."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True


def _fs_now(folder: Path) -> float:
    """The file server's clock: the mtime of a file just written in ``folder``."""
    probe = folder / f".faket-lock-clock-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(probe)
    except OSError:
        return time.time()


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as recorded in the lock file."""

    host: str
    pid: int
    pid_start: str | None
    started_at: str
    token: str
    lease_s: float
    command: str
    mtime: float

    def describe(self) -> str:
        """``host H, pid P, started T (command)``."""
        what = f" ({self.command})" if self.command else ""
        return f"host {self.host}, pid {self.pid}, started {self.started_at}{what}"

    def stale_reason(self, fs_now: float) -> str | None:
        """Why the holder is gone (``None``: it may be alive)."""
        if self.host == socket.gethostname():
            if not _pid_alive(self.pid):
                return f"pid {self.pid} is not running on {self.host}"
            start = _pid_start(self.pid)
            if self.pid_start and start and start != self.pid_start:
                return f"pid {self.pid} on {self.host} is now another process"
            return None
        age = fs_now - self.mtime
        if age > self.lease_s:
            return f"its lease expired {age - self.lease_s:.0f} s ago"
        return None


def _read_holder(path: Path) -> Holder | None:
    """The lock's holder; ``None`` when there is no lock file. A damaged file reads as stale."""
    try:
        with open(path, "rb") as f:
            raw = f.read(65536)
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        d = json.loads(raw.decode("utf-8"))
        if not isinstance(d, dict):
            raise ValueError("not an object")
        return Holder(
            host=str(d["host"]),
            pid=int(d["pid"]),
            pid_start=d.get("pid_start"),
            started_at=str(d.get("started_at", "?")),
            token=str(d["token"]),
            lease_s=float(d.get("lease_s", DEFAULT_LEASE_S)),
            command=str(d.get("command", "")),
            mtime=mtime,
        )
    except (ValueError, KeyError, TypeError):
        # an empty or torn lock file (its creator died between create and write): its age
        # decides, as for a holder on another host
        return Holder("?", -1, None, "?", f"damaged:{raw!r:.40}", DEFAULT_LEASE_S, "", mtime)


class StoreLock:
    """The lock of one store, held by this process.

    Use :func:`store_lock` (re-entrant within a process) rather than this class directly.
    """

    def __init__(
        self, store: str | os.PathLike[str], command: str = "", lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        self.path = lock_path(store)
        self.store = Path(store).expanduser().resolve()
        self.command = command
        self.lease_s = float(lease_s)
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquire -------------------------------------------------------------------------------

    def _record(self) -> bytes:
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _pid_start(os.getpid()),
            "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "token": self.token,
            "lease_s": self.lease_s,
            "command": self.command,
        }
        return (json.dumps(record) + "\n").encode()

    def _create(self) -> bool:
        """Create the lock file exclusively; False if it exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except FileNotFoundError as err:
            if not self.path.parent.is_dir():
                raise InputError(
                    f"output folder {self.path.parent} does not exist; create it first"
                ) from None
            return self._unwritable(err)  # a folder that takes no files (/proc, some mounts)
        except OSError as err:
            return self._unwritable(err)
        try:
            os.write(fd, self._record())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _unwritable(self, err: OSError) -> bool:
        """Raise the one line for a folder that takes no lock file."""
        raise InputError(
            f"output folder {self.path.parent} is not writable ({err.strerror}: the store's "
            f"lock {self.path.name} goes there); choose another output path, or copy a "
            "read-only store somewhere writable"
        )

    def acquire(self) -> None:
        """Take the lock, or take over a stale one.

        Raises
        ------
        StoreLockedError
            A live run holds it (the message names its host, pid and start time).
        """
        for _ in range(3):
            if self._create():
                self._start_refresh()
                return
            holder = _read_holder(self.path)
            if holder is None:  # released meanwhile
                continue
            reason = holder.stale_reason(_fs_now(self.path.parent))
            if reason is None:
                raise StoreLockedError(
                    f"store {self.store} is being written by another run ({holder.describe()}); "
                    f"wait for it to finish, or, if that run is gone, delete {self.path}"
                )
            if self._take_over(holder, reason):
                self._start_refresh()
                return
        raise StoreLockedError(
            f"store {self.store} is locked ({self.path}) and the lock changes hands as this "
            "run tries to take it; try again"
        )

    def _take_over(self, stale: Holder, reason: str) -> bool:
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if _fs_now(guard.parent) - guard.stat().st_mtime > TAKEOVER_STALE_S:
                    os.unlink(guard)  # its creator died mid take-over
            return False
        os.close(fd)
        try:
            now = _read_holder(self.path)
            if now is not None and now.token != stale.token:
                return False  # someone else took it meanwhile
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            if not self._create():
                return False
            warnings.warn(
                f"took over the stale lock of {self.store} ({stale.describe()}: {reason})",
                stacklevel=3,
            )
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(guard)

    # -- lease ---------------------------------------------------------------------------------

    def _start_refresh(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._refresh_loop, name="faket-store-lock", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        period = max(0.05, self.lease_s / 4)
        while not self._stop.wait(period):
            if not self.refresh():
                return

    def refresh(self) -> bool:
        """Renew the lease (touch the file); False (and :attr:`lost`) if the lock is not ours."""
        holder = _read_holder(self.path)
        if holder is None or holder.token != self.token:
            if not self.lost:
                self.lost = True
                warnings.warn(
                    f"the lock of {self.store} was taken over by another run while this one "
                    "held it (was this machine suspended for longer than the lease?); stop it",
                    stacklevel=2,
                )
            return False
        with contextlib.suppress(OSError):
            os.utime(self.path)
        return True

    # -- release -------------------------------------------------------------------------------

    def release(self) -> None:
        """Stop the lease and remove the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        holder = _read_holder(self.path)
        if holder is not None and holder.token == self.token:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


_HELD: dict[Path, tuple[StoreLock, int]] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def store_lock(
    store: str | os.PathLike[str], command: str = "", lease_s: float | None = None
) -> Iterator[StoreLock]:
    """Hold the store's lock for the ``with`` block; re-entrant within this process.

    A nested ``store_lock`` on the same store (the CLI takes it before the cluster starts, the
    library's ``generate`` takes it again) shares the outer one.

    Raises
    ------
    StoreLockedError
        A live run elsewhere holds it.
    """
    path = lock_path(store)
    with _HELD_GUARD:
        if path in _HELD:
            lock, depth = _HELD[path]
            _HELD[path] = (lock, depth + 1)
        else:
            lease = float(os.environ.get("FAKET_DASK_LOCK_LEASE_S", DEFAULT_LEASE_S))
            lock = StoreLock(store, command, lease_s if lease_s is not None else lease)
            lock.acquire()
            _HELD[path] = (lock, 1)
    try:
        yield lock
    finally:
        with _HELD_GUARD:
            lock, depth = _HELD[path]
            if depth > 1:
                _HELD[path] = (lock, depth - 1)
            else:
                del _HELD[path]
                lock.release()


def holder_info(store: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The current holder of the store's lock as a dict (``None``: unlocked)."""
    h = _read_holder(lock_path(store))
    if h is None:
        return None
    return {"host": h.host, "pid": h.pid, "started_at": h.started_at, "command": h.command}
