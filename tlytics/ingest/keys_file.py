"""The keys file (`--keys-file`), loaded at start and reloaded without a restart: on SIGHUP,
and when the file changes (its inode, size or modification time, polled every
`POLL_PERIOD_S`), so a removed key is refused within a second and a new one accepted.

At start a bad file stops the server (exit 1, the message names the line). On a reload a bad
or missing file changes nothing: the keys in force stay, and an error names the line. A reload
replaces the key ring whole, so a request in flight sees the old keys or the new ones, never a
mix, and none is dropped. Logs name keys by label, never by secret.

Only a regular file is read, and never with a blocking open: a FIFO or a device at the path is
a refused reload (logged), not a reload thread stuck for ever. A file other users may read is
loaded with a warning.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import structlog
from aiohttp import web

from tlytics.ingest.keys import Keys, KeysFileError, parse_keys_file
from tlytics.ingest.state import KEYS, SETTINGS

log = structlog.get_logger("tlytics.ingest")

POLL_PERIOD_S = 0.25
# Far more than any list of keys; a larger file is refused rather than read into memory.
KEYS_FILE_MAX_BYTES = 1024 * 1024
# An edit in place within the file system's timestamp granularity can leave inode, size and
# mtime as they were: while the file was modified this recently, its bytes are compared too.
_RECENT_S = 2.0


def _signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


class KeysFileWatcher:
    """Loads the keys file into `keys` and reloads it when it changes."""

    def __init__(self, path: Path, keys: Keys) -> None:
        self.path = path
        self.keys = keys
        self._signature: tuple[int, int, int, int] | None = None
        self._text: str | None = None
        self._warned_mode: int | None = None

    def _read(self) -> tuple[tuple[int, int, int, int], str]:
        """The file's signature and text. Only a regular file is read, opened without blocking:
        a FIFO put at the path would block the open (and the reload thread, and shutdown
        waiting for it) until a writer came; a device would never end."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise KeysFileError(f"cannot read the keys file {self.path}: {exc.strerror}") from exc
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise KeysFileError(f"the keys file {self.path} is not a regular file; it was not read")
            if status.st_size > KEYS_FILE_MAX_BYTES:
                raise KeysFileError(f"the keys file {self.path} is larger than {KEYS_FILE_MAX_BYTES} bytes")
            self._warn_if_others_may_read(status)
            with os.fdopen(descriptor, "rb", closefd=False) as file:
                raw = file.read(KEYS_FILE_MAX_BYTES + 1)
            return _signature(status), raw.decode("utf-8-sig")  # a BOM (Windows editors) is no scope
        except (OSError, UnicodeDecodeError) as exc:
            raise KeysFileError(f"cannot read the keys file {self.path}: {exc}") from exc
        finally:
            os.close(descriptor)

    def _warn_if_others_may_read(self, status: os.stat_result) -> None:
        """A warning, once per mode, when users other than the owner (and its group) may read
        the secrets: the file works, but anyone on the machine can take a key."""
        mode = stat.S_IMODE(status.st_mode)
        if mode & stat.S_IROTH and mode != self._warned_mode:
            log.warning(
                "keys_file_readable_by_others",
                keys_file=str(self.path),
                mode=f"{mode:04o}",
                hint=f"chmod 600 {self.path}",
            )
        self._warned_mode = mode if mode & stat.S_IROTH else None

    def _install(self, text: str) -> None:
        ring = self.keys.with_file_keys(parse_keys_file(text, str(self.path)))
        before = self.keys.ring.labels()
        self.keys.ring = ring
        log.info(
            "keys_loaded",
            keys_file=str(self.path),
            keys=len(ring.keys),
            added=sorted(ring.labels() - before),
            removed=sorted(before - ring.labels()),
        )

    def load(self) -> None:
        """At start: load the file, or raise KeysFileError (naming the bad line)."""
        self._signature, self._text = self._read()
        self._install(self._text)

    def check(self, *, force: bool = False) -> bool:
        """Reload when the file changed (or always, with `force`); on a bad file keep the keys
        in force and log why. Returns whether new keys were installed."""
        try:
            signature = _signature(os.stat(self.path))
            recent = time.time() - signature[3] / 1e9 < _RECENT_S
            if not force and signature == self._signature and not recent:
                return False
            signature, text = self._read()
        except (KeysFileError, OSError) as exc:
            # Missing (say, mid-way through an editor's rename) or unreadable: keep the keys.
            if force or self._signature is not None:
                log.error("keys_file_unreadable", error=str(exc), kept_keys=len(self.keys.ring.keys))
                self._signature = None  # logged once; reloaded when it is back
            return False
        unchanged = text == self._text
        self._signature = signature
        if unchanged and not force:
            return False
        self._text = text
        try:
            self._install(text)
        except KeysFileError as exc:
            log.error("keys_file_invalid", error=str(exc), kept_keys=len(self.keys.ring.keys))
            return False
        return True

    async def watch(self, wake: asyncio.Event) -> None:
        """Check every POLL_PERIOD_S, and at once (forced) when `wake` is set (SIGHUP)."""
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=POLL_PERIOD_S)
            forced = wake.is_set()
            wake.clear()
            if forced:
                log.info("keys_reload_requested", signal="SIGHUP")
            try:
                await asyncio.to_thread(self.check, force=forced)
            except Exception:
                # The watcher must outlive any surprise, or keys would silently stop reloading.
                log.exception("keys_file_check_failed")


async def keys_file_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the keys file (a bad one stops the start), then watch it until shutdown."""
    path = app[SETTINGS].keys_file
    assert path is not None
    watcher = KeysFileWatcher(path, app[KEYS])
    await asyncio.to_thread(watcher.load)
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, wake.set)
        on_sighup = True
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        on_sighup = False  # not the main thread, or no SIGHUP here: file changes still reload
    task = asyncio.create_task(watcher.watch(wake), name="keys-file-watcher")
    yield
    if on_sighup:
        loop.remove_signal_handler(signal.SIGHUP)
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def sighup_without_keys_file_ctx(app: web.Application) -> AsyncIterator[None]:
    """Without a keys file there is nothing to reload, but SIGHUP is still the reload signal
    (systemd's `ExecReload=kill -HUP $MAINPID`, an operator's habit): by default it would kill
    the server on the spot, without a clean stop. It is logged and otherwise ignored."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("sighup_ignored", reason="no --keys-file to reload"))
        on_sighup = True
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        on_sighup = False  # not the main thread (tests), or no SIGHUP on this platform
    yield
    if on_sighup:
        loop.remove_signal_handler(signal.SIGHUP)
