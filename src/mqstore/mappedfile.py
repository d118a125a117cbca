"""Fixed-size memory-mapped files (MappedFile), the ordered queue of them that makes one
log (MappedFileQueue), and the background service that creates files ahead of need."""

from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import threading
from typing import Dict, List, Optional

from ._native import ffi, lib
from .errors import DiskFullError, MQStoreError, StoreCorruptedError

log = logging.getLogger(__name__)

OS_PAGE_SIZE = mmap.PAGESIZE
FILE_NAME_DIGITS = 20
_FILE_NAME_RE = re.compile(r"[0-9]{20}")


def file_name(offset: int) -> str:
    """A store file's name: its first byte's offset, 20 digits, zero-padded."""
    return f"{offset:020d}"


def drop_unreserved_file(path: str, file_size: int, readonly: bool) -> bool:
    """A newest file shorter than `file_size` holding only zeros is what a crash
    between creating a file and reserving its blocks leaves: delete it (RocketMQ 5
    deletes a zero-length last file; a read-only store just ignores it) and return
    True. Anything else is left for loading to judge."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    if size >= file_size:
        return False
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            if chunk.count(0) != len(chunk):
                return False
    log.warning("%s: %d of %d bytes, all zero: a file whose creation was cut short; %s",
                path, size, file_size, "ignored (read-only)" if readonly else "deleted")
    if not readonly:
        os.unlink(path)
    return True


class MappedFile:
    """One file of a MappedFileQueue: `file_size` bytes, named by the offset of its
    first byte, mapped into memory.

    Positions (in-memory only, as in RocketMQ): `wrote_position` (bytes appended and
    visible to readers), `committed_position` and `flushed_position` (bytes msync'ed).

    Readers that touch the mapping outside the writer's lock take a reference with
    `hold()` / `release()`; `destroy()` unmaps only once the last reference is gone.
    """

    def __init__(
        self,
        path: str,
        file_size: int,
        *,
        create: bool = False,
        readonly: bool = False,
        offset_name: bool = True,
        in_memory: bool = False,
    ) -> None:
        name = os.path.basename(path)
        if offset_name and not _FILE_NAME_RE.fullmatch(name):
            raise StoreCorruptedError(
                f"{path}: file name is not a 20-digit offset; not a store file", path=path
            )
        self.path = path
        self.file_size = file_size
        self.file_from_offset = int(name) if offset_name else 0
        self.readonly = readonly
        self.wrote_position = 0
        self.committed_position = 0
        self.flushed_position = 0
        self._refs = 1
        self._available = True
        #: store-clock ms of the first try_destroy() (a cleanup waiting for readers)
        self.first_shutdown_timestamp = 0
        self._ref_lock = threading.Lock()
        #: anonymous memory, not a file: a read-only store's rebuilt queues and index
        self.in_memory = in_memory
        if in_memory:
            self._mmap = mmap.mmap(-1, file_size)
            self.ptr = ffi.from_buffer("char[]", self._mmap, require_writable=True)
        else:
            self._mmap, self.ptr = self._map(create)

    def _map(self, create: bool):
        if create:
            fd = self._create_reserved()
        else:
            try:
                fd = os.open(self.path, os.O_RDONLY if self.readonly else os.O_RDWR)
            except OSError as exc:
                raise MQStoreError(f"cannot open {self.path}: {exc.strerror}") from exc
        try:
            actual = os.fstat(fd).st_size
            if actual != self.file_size:
                raise StoreCorruptedError(
                    f"{self.path}: file is {actual} bytes, the store's file size is "
                    f"{self.file_size}",
                    path=self.path,
                )
            prot = mmap.PROT_READ if self.readonly else mmap.PROT_READ | mmap.PROT_WRITE
            mapped = mmap.mmap(fd, self.file_size, mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        return mapped, ffi.from_buffer("char[]", mapped, require_writable=not self.readonly)

    def _create_reserved(self) -> int:
        """Create the file and reserve all its blocks, so a full disk shows up here, as
        an error, and never as SIGBUS inside a later write through the mapping."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise MQStoreError(f"{self.path} already exists") from None
        except OSError as exc:
            raise MQStoreError(f"cannot create {self.path}: {exc.strerror}") from exc
        try:
            os.posix_fallocate(fd, 0, self.file_size)
        except OSError as exc:
            os.close(fd)
            os.unlink(self.path)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"no space to reserve {self.file_size} bytes for {self.path}"
                ) from exc
            raise MQStoreError(f"cannot reserve space for {self.path}: {exc.strerror}") from exc
        return fd

    # -- positions ---------------------------------------------------------------

    def is_full(self) -> bool:
        return self.wrote_position >= self.file_size

    def set_positions(self, position: int) -> None:
        """Set wrote, committed and flushed positions (load and truncation)."""
        self.wrote_position = self.committed_position = self.flushed_position = position

    def touch_pages(self, start: int = 0) -> int:
        """Fault every page from `start` in for writing (warm-up); only on a file no
        writer uses yet. Returns the number of pages touched."""
        return lib.mq_touch_pages(self.ptr, start, self.file_size, OS_PAGE_SIZE)

    def flush(self, least_pages: int = 0) -> int:
        """msync what was written since the last flush, if at least `least_pages` dirty
        pages accumulated (any amount when 0, everything when the file is full).
        Returns the flushed position."""
        if self.in_memory:
            self.flushed_position = self.wrote_position
            return self.flushed_position
        wrote = self.wrote_position
        flushed = self.flushed_position
        if (
            wrote > flushed
            and (
                wrote >= self.file_size
                or least_pages <= 0
                or wrote // OS_PAGE_SIZE - flushed // OS_PAGE_SIZE >= least_pages
            )
            and self.hold()
        ):
            try:
                rc = lib.mq_msync(self.ptr, flushed, wrote)
            finally:
                self.release()
            if rc != 0:
                raise MQStoreError(f"msync of {self.path} failed: {os.strerror(-rc)}")
            self.flushed_position = wrote
        return self.flushed_position

    def last_nonzero(self, start: int = 0) -> int:
        """One past the last non-zero byte at or after `start` (`start` if none)."""
        return lib.mq_last_nonzero(self.ptr, start, self.file_size)

    def read(self, position: int, size: int) -> bytes:
        """A copy of `size` bytes at `position` (bounds-checked against the file)."""
        if position < 0 or size < 0 or position + size > self.file_size:
            raise ValueError(f"read of {size} bytes at {position} is outside {self.path}")
        return ffi.unpack(self.ptr + position, size)

    def drop_resident(self) -> None:
        """Unmap this file's pages from the process (madvise DONTNEED) without touching
        its data: the mapping is shared, so written pages stay in the page cache,
        dirty ones included, and a later read faults them back in. Keeps resident
        memory from growing with the amount of the store read or written."""
        if self.in_memory or not self.hold():
            return  # anonymous memory would be zeroed: never for in-memory files
        try:
            self._mmap.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):
            pass  # no madvise here: the kernel reclaims clean pages under pressure
        finally:
            self.release()

    # -- lifetime ----------------------------------------------------------------

    def hold(self) -> bool:
        """Take a reference for reading; False when the file is being destroyed."""
        with self._ref_lock:
            if not self._available:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._ref_lock:
            self._refs -= 1
            if self._refs > 0:
                return
        self._unmap()

    def _unmap(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            ffi.release(ptr)
            self._mmap.close()

    def shutdown(self) -> None:
        """Drop the owner's reference: unmapped once no reader holds it."""
        with self._ref_lock:
            if not self._available:
                return
            self._available = False
        self.release()

    @property
    def is_closed(self) -> bool:
        return self.ptr is None

    @property
    def is_available(self) -> bool:
        """False once shutdown or a cleanup started: hold() then fails."""
        return self._available

    @property
    def holders(self) -> int:
        """References taken by readers (the owner's own reference not counted)."""
        return self._refs - 1 if self._available else self._refs

    def try_destroy(self, interval_forcibly_ms: int, now_ms: int) -> bool:
        """Cleanup's delete (RocketMQ's destroy(intervalForcibly)): the first call makes
        the file unavailable to new readers and drops the owner's reference. When no
        reader holds it any more, it is unmapped and deleted: True. While readers hold
        it, False (call again later), until `interval_forcibly_ms` after the first
        call: then the file is deleted anyway (True). Its mapping is never unmapped
        under a reader (that would crash it); the last release() unmaps it and only
        then does the file system free the blocks."""
        with self._ref_lock:
            if self._available:
                self._available = False
                self.first_shutdown_timestamp = now_ms
                self._refs -= 1
            refs = self._refs
            expired = now_ms - self.first_shutdown_timestamp >= interval_forcibly_ms
        if refs > 0 and not expired:
            return False
        if refs == 0:
            self._unmap()
        elif refs > 0:
            log.warning("%s: still held by %d reader(s) %d ms after deletion began; deleted "
                        "anyway, unmapped when the last reader lets go", self.path, refs,
                        now_ms - self.first_shutdown_timestamp)
        if not self.in_memory:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        return True

    def destroy(self) -> None:
        """Unmap (once readers are done) and delete the file."""
        self.shutdown()
        if self.in_memory:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return (
            f"MappedFile({os.path.basename(self.path)}, wrote={self.wrote_position}, "
            f"flushed={self.flushed_position})"
        )


class AllocateMappedFileService:
    """Creates MappedFiles ahead of need on a background thread (RocketMQ's
    AllocateMappedFileService), optionally touching their pages (warm-up)."""

    def __init__(self, warm: bool) -> None:
        self._warm = warm
        self._lock = threading.Condition()
        self._pending: List[tuple] = []
        self._ready: Dict[str, object] = {}  # path -> MappedFile | BaseException
        self._in_progress: Optional[str] = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="mqstore-allocate", daemon=True)
        self._thread.start()

    def prepare(self, path: str, file_size: int) -> None:
        """Ask for `path` to be created in the background (no-op if already asked)."""
        with self._lock:
            if self._stopped or path in self._ready or path == self._in_progress:
                return
            if any(p == path for p, _ in self._pending):
                return
            self._pending.append((path, file_size))
            self._lock.notify_all()

    def take(self, path: str, file_size: int) -> MappedFile:
        """The file at `path`: the one prepared in the background when there is one
        (waiting for it if under way), else a new one created now."""
        with self._lock:
            self._pending = [(p, s) for p, s in self._pending if p != path]
            while self._in_progress == path:
                self._lock.wait()
            ready = self._ready.pop(path, None)
        if isinstance(ready, MappedFile):
            return ready
        if isinstance(ready, BaseException):
            log.warning("background creation of %s failed (%s); retrying now", path, ready)
        return MappedFile(path, file_size, create=True)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopped:
                    self._lock.wait()
                if self._stopped:
                    return
                path, size = self._pending.pop(0)
                self._in_progress = path
            result: object
            try:
                result = MappedFile(path, size, create=True)
                if self._warm:
                    result.touch_pages()
            except BaseException as exc:  # reported to the taker
                result = exc
            with self._lock:
                self._in_progress = None
                if self._stopped and isinstance(result, MappedFile):
                    result.destroy()
                else:
                    self._ready[path] = result
                self._lock.notify_all()

    def shutdown(self) -> None:
        """Stop the thread and delete files prepared but never used (as RocketMQ does
        at a clean shutdown)."""
        with self._lock:
            self._stopped = True
            self._pending.clear()
            self._lock.notify_all()
        self._thread.join()
        with self._lock:
            ready, self._ready = self._ready, {}
        for item in ready.values():
            if isinstance(item, MappedFile):
                item.destroy()


class MappedFileQueue:
    """The files of one log in offset order: the CommitLog, or one ConsumeQueue."""

    def __init__(
        self,
        store_path: str,
        mapped_file_size: int,
        allocator: Optional[AllocateMappedFileService] = None,
        readonly: bool = False,
        in_memory: bool = False,
    ) -> None:
        self.store_path = store_path
        self.mapped_file_size = mapped_file_size
        self.allocator = allocator
        self.readonly = readonly
        self.in_memory = in_memory
        self.files: List[MappedFile] = []
        self.flushed_where = 0
        self.committed_where = 0

    def load(self) -> None:
        """Map every existing file, in name order; every one is marked full until
        recovery sets the real positions. Raises StoreCorruptedError naming a file
        whose name is not a 20-digit offset or whose size is wrong, or a gap."""
        if self.in_memory or not os.path.isdir(self.store_path):
            return
        names = sorted(os.listdir(self.store_path))
        if names and _FILE_NAME_RE.fullmatch(names[-1]) and drop_unreserved_file(
            os.path.join(self.store_path, names[-1]), self.mapped_file_size, self.readonly
        ):
            names.pop()
        files = []
        try:
            for name in names:
                path = os.path.join(self.store_path, name)
                if os.path.isdir(path):
                    raise StoreCorruptedError(f"{path}: unexpected directory in a log", path=path)
                mapped = MappedFile(path, self.mapped_file_size, readonly=self.readonly)
                if mapped.file_from_offset % self.mapped_file_size:
                    mapped.shutdown()
                    raise StoreCorruptedError(
                        f"{path}: offset is not a multiple of the file size "
                        f"{self.mapped_file_size}",
                        path=path,
                    )
                if (
                    files
                    and mapped.file_from_offset
                    != files[-1].file_from_offset + self.mapped_file_size
                ):
                    mapped.shutdown()
                    raise StoreCorruptedError(
                        f"{path}: does not follow {os.path.basename(files[-1].path)} "
                        "(a file is missing)",
                        path=path,
                    )
                mapped.set_positions(self.mapped_file_size)
                files.append(mapped)
        except BaseException:
            for mapped in files:
                mapped.shutdown()
            raise
        self.files = files

    def map_new_files(self) -> List[MappedFile]:
        """Map files another process added after the last one known (a read-only queue
        following a live writer). Files not yet at full size are left for later.
        Returns the files added, with zero positions."""
        if not os.path.isdir(self.store_path):
            return []
        last = self.last_file()
        added = []
        for name in sorted(os.listdir(self.store_path)):
            if not _FILE_NAME_RE.fullmatch(name) or (last and int(name) <= last.file_from_offset):
                continue
            expected = (last.file_from_offset + self.mapped_file_size) if last else None
            path = os.path.join(self.store_path, name)
            if (expected is not None and int(name) != expected) or (
                os.path.getsize(path) != self.mapped_file_size
            ):
                break
            mapped = MappedFile(path, self.mapped_file_size, readonly=self.readonly)
            self.files.append(mapped)
            added.append(mapped)
            last = mapped
        return added

    # -- lookup ------------------------------------------------------------------

    def first_file(self) -> Optional[MappedFile]:
        files = self.files
        return files[0] if files else None

    def last_file(self) -> Optional[MappedFile]:
        files = self.files
        return files[-1] if files else None

    def min_offset(self) -> int:
        """Start of the first file still readable: a first file that cleanup is
        waiting to delete (unavailable) no longer counts, as in RocketMQ."""
        files = self.files
        if not files:
            return 0
        first = files[0]
        if not first.is_available and len(files) > 1:
            return files[1].file_from_offset
        return first.file_from_offset

    def max_offset(self) -> int:
        """One past the last written byte (the read position of the last file)."""
        last = self.last_file()
        return last.file_from_offset + last.wrote_position if last else 0

    def find_by_offset(self, offset: int) -> Optional[MappedFile]:
        """The file holding `offset`, or None when it is outside every file."""
        files = self.files
        if not files:
            return None
        index = offset // self.mapped_file_size - files[0].file_from_offset // self.mapped_file_size
        if 0 <= index < len(files):
            mapped = files[index]
            if mapped.file_from_offset <= offset < mapped.file_from_offset + self.mapped_file_size:
                return mapped
        for mapped in files:
            if mapped.file_from_offset <= offset < mapped.file_from_offset + self.mapped_file_size:
                return mapped
        return None

    def next_file(self, start_offset: int = 0) -> MappedFile:
        """Create (or take the pre-created) file after the last one, or the first file
        at `start_offset` rounded down to a file boundary; the following file is
        prepared in the background when an allocator is set."""
        if self.readonly:
            raise MQStoreError(f"{self.store_path} is open read-only")
        size = self.mapped_file_size
        last = self.last_file()
        start = last.file_from_offset + size if last else start_offset - start_offset % size
        path = os.path.join(self.store_path, file_name(start))
        if self.in_memory:
            mapped = MappedFile(path, size, in_memory=True)
            if not self.files:
                self.flushed_where = self.committed_where = start
            self.files.append(mapped)
            return mapped
        os.makedirs(self.store_path, exist_ok=True)
        if self.allocator is not None:
            mapped = self.allocator.take(path, size)
            self.allocator.prepare(os.path.join(self.store_path, file_name(start + size)), size)
        else:
            mapped = MappedFile(path, size, create=True)
        if not self.files:
            self.flushed_where = self.committed_where = start
        self.files.append(mapped)
        return mapped

    # -- flushing ------------------------------------------------------------------

    def flush(self, least_pages: int = 0) -> bool:
        """Flush the file holding the flushed position (RocketMQ flushes one file per
        call). Returns True when nothing was left to flush."""
        mapped = self.find_by_offset(self.flushed_where)
        if mapped is None and self.files and self.flushed_where == self.max_offset():
            return True
        if mapped is None:
            return True
        position = mapped.flush(least_pages)
        self.flushed_where = mapped.file_from_offset + position
        return self.flushed_where >= self.max_offset()

    def flush_all(self) -> None:
        """Flush what was written when the call began, across file boundaries (not
        what arrives meanwhile: a group-commit leader must not chase new appends)."""
        target = self.max_offset()
        for _ in range(len(self.files) + 1):
            if self.flush(0) or self.flushed_where >= target:
                return

    # -- truncation and deletion ---------------------------------------------------

    def truncate(self, offset: int, wipe_to: Optional[int] = None) -> List[str]:
        """Make `offset` the end of the log: the file holding it keeps its bytes but
        its positions move to it; files starting after it are deleted. Returns the
        deleted paths.

        RocketMQ never zeroes what it cuts off. Stale records after the end can then
        come back: a later append overwrites the first of them, and the next walk finds
        the rest valid again. So with `wipe_to` (a position in the file holding
        `offset`) the bytes from `offset` up to it are zeroed and flushed; readers
        still rely on positions, not on the zeros. A read-only queue wipes nothing.
        """
        deleted = []
        keep = []
        for mapped in self.files:
            end = mapped.file_from_offset + self.mapped_file_size
            if end <= offset:
                keep.append(mapped)
            elif mapped.file_from_offset <= offset:
                position = offset - mapped.file_from_offset
                if wipe_to is not None and wipe_to > position and not self.readonly:
                    lib.mq_zero(mapped.ptr, position, wipe_to)
                    lib.mq_msync(mapped.ptr, position, wipe_to)
                mapped.set_positions(position)
                keep.append(mapped)
            elif self.readonly:
                mapped.shutdown()  # out of view, but a read-only queue deletes nothing
            else:
                mapped.destroy()
                deleted.append(mapped.path)
        self.files = keep
        self.flushed_where = self.committed_where = min(self.flushed_where, offset)
        if keep and self.flushed_where < keep[0].file_from_offset:
            self.flushed_where = self.committed_where = keep[0].file_from_offset
        return deleted

    def delete_first_files(self, count: int) -> List[str]:
        """Delete up to `count` files from the head, never the last (current) file."""
        count = max(0, min(count, len(self.files) - 1))
        doomed, self.files = self.files[:count], self.files[count:]
        for mapped in doomed:
            mapped.destroy()
        return [m.path for m in doomed]

    def drop_files(self, doomed: List[MappedFile]) -> None:
        """Take deleted files out of the list (callers hold the owner's append lock, so
        no file is appended meanwhile). Readers keep whatever list they already have."""
        gone = {id(mapped) for mapped in doomed}
        self.files = files = [mapped for mapped in self.files if id(mapped) not in gone]
        if files and self.flushed_where < files[0].file_from_offset:
            self.flushed_where = self.committed_where = files[0].file_from_offset

    def forget_deleted_head(self) -> int:
        """Read-only: let go of leading files another process's cleanup deleted, so
        their blocks are freed once no reader holds them (never the last file).
        Returns how many were dropped."""
        files = self.files
        gone = 0
        while gone < len(files) - 1 and not os.path.exists(files[gone].path):
            gone += 1
        if gone:
            self.files = files[gone:]
            for mapped in files[:gone]:
                mapped.shutdown()
        return gone

    def shutdown(self) -> None:
        for mapped in self.files:
            mapped.shutdown()
        self.files = []
