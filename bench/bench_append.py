"""Storage-core comparison: mqstore's append path against its floors, in one run.

``python bench/bench_append.py [--quick]`` measures, on one machine and in one
process, and prints a markdown table of messages per second (best and worst of
several runs, interleaved within each section) with ratios:

- floors: a Python ``f.write(record)`` loop; ``lib.mq_copy`` of one pre-encoded record
  per call into a mapped file whose pages were touched beforehand (the per-message
  raw floor); one ``mq_copy`` per pre-encoded batch of 256 (the batch floor); a
  minimal appender (a ``threading.Lock`` and one cffi copy call per record);
- mqstore ASYNC_FLUSH ``put`` and ``put_batch`` (256 per batch), 128 B and 4 KiB bodies,
  into pages touched before timing, the allocator and dispatcher threads idle at start;
- page warm-up: 4 KiB appends into fresh pages of a new file against touched pages;
- SYNC_FLUSH: one putter (one msync per put) against ``os.write`` + ``os.fdatasync`` on
  a plain file, and 8 concurrent putters (group commit).

Messages are built before timing: topic "BenchTopic", a random body, no properties.
Store files go in a temporary directory under ``--dir`` (default: this directory, on
the real disk; never tmpfs) and are deleted at the end. ``--sections`` runs a subset;
``--revision`` names what is measured when mqstore is imported from a snapshot rather
than a git checkout; ``--profile N`` instead prints a cProfile (by tottime) of N single
128 B puts.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import io
import itertools
import mmap
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Tuple, Union

import cffi

import mqstore
from mqstore import SYNC_FLUSH, Message, MessageStore, PutStatus
from mqstore._native import ffi, lib
from mqstore.mappedfile import MappedFile, file_name
from mqstore.message import encode_host

HERE = os.path.dirname(os.path.abspath(__file__))
FILE_SIZE = 1 << 30  # RocketMQ's default CommitLog file size
PAGE_SIZE = mmap.PAGESIZE
TOPIC = "BenchTopic"
BATCH = 256
SYNC_THREADS = 8
MESSAGES_PER_LIST = 1024  # distinct Message objects, cycled through by the put loops
SMALL, LARGE = 128, 4096

# A case runs `count` messages and returns the seconds of its timed part, optionally
# with details (such as flushes per message) to show in the table.
CaseResult = Union[float, Tuple[float, Dict[str, float]]]
Case = Callable[[int], CaseResult]


# ----------------------------------------------------------------------------- inputs


def encode_record(body: bytes) -> bytes:
    """The record mqstore writes for Message(TOPIC, body) with the default hosts."""
    topic = TOPIC.encode()
    host = encode_host("127.0.0.1:10911")
    size = lib.mq_record_size(len(body), len(topic), 0, len(host), len(host))
    buffer = ffi.new("char[]", size + 8)  # the encoder keeps room for a blank record
    written = lib.mq_encode_record(
        buffer, 0, size + 8, 0, body, len(body), topic, len(topic), b"", 0,
        0, 0, 0, 0, 1_700_000_000_000, host, len(host), 1_700_000_000_000, host, len(host),
        0, 0,
    )
    assert written == size, written
    return ffi.unpack(buffer, size)


def make_messages(body_size: int, count: int = MESSAGES_PER_LIST) -> List[Message]:
    return [Message(TOPIC, os.urandom(body_size)) for _ in range(count)]


def record_size(body_size: int) -> int:
    return len(encode_record(bytes(body_size)))


# ----------------------------------------------------------------------------- files


class Workspace:
    """A temporary directory for every file the benchmark creates; removed at the end."""

    def __init__(self, root: str) -> None:
        self.path = tempfile.mkdtemp(prefix=".mqstore-bench-", dir=root)
        self._serial = 0

    def new_path(self, name: str) -> str:
        self._serial += 1
        return os.path.join(self.path, f"{self._serial:04d}-{name}")

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def touch(mapped: MappedFile, start: int, length: int) -> None:
    """Fault in, for writing, the pages of [start, start + length) of a mapped file."""
    lib.mq_touch_pages(mapped.ptr, start, min(mapped.file_size, start + length), PAGE_SIZE)


@contextlib.contextmanager
def scratch_mapped_file(ws: Workspace, touch_bytes: int) -> Iterator[MappedFile]:
    """A new fallocate'd 1 GiB MappedFile, its first `touch_bytes` touched; deleted
    afterwards without being flushed."""
    directory = ws.new_path("mapped")
    os.makedirs(directory)
    mapped = MappedFile(os.path.join(directory, file_name(0)), FILE_SIZE, create=True)
    try:
        if touch_bytes:
            touch(mapped, 0, touch_bytes)
        yield mapped
    finally:
        mapped.destroy()
        shutil.rmtree(directory, ignore_errors=True)


def wait_until_idle(store: MessageStore, timeout: float = 60.0) -> None:
    """Wait until the background allocator has created (and warmed) the next file and
    the dispatcher (when the store has one) has caught up, so that neither overlaps a
    timed section. There is no public call for this; the benchmark reads the services'
    private state."""
    allocator = store.commitlog._allocator
    dispatcher = getattr(store, "dispatcher", None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = dispatcher is not None and (dispatcher.behind() > 0 or not dispatcher.idle)
        if allocator is not None:
            with allocator._lock:
                busy = busy or bool(allocator._pending) or allocator._in_progress is not None
        if not busy:
            return
        time.sleep(0.005)
    raise RuntimeError("the store's background services did not go idle in time")


def dispatch_backlog(store: MessageStore) -> Dict[str, float]:
    """MB of CommitLog not yet dispatched (ConsumeQueue, index), for stores that have a
    dispatcher thread: how far it fell behind during a timed section."""
    dispatcher = getattr(store, "dispatcher", None)
    return {} if dispatcher is None else {"dispatch_backlog_mb": dispatcher.behind() / 1e6}


@contextlib.contextmanager
def open_store(ws: Workspace, touch_bytes: int, wait: bool = True,
               **overrides) -> Iterator[MessageStore]:
    """A new store with 1 GiB CommitLog files whose first file exists (one message put)
    and, when `touch_bytes`, has that many bytes after its write position touched;
    with `wait`, its background services are idle before the caller starts timing."""
    path = ws.new_path("store")
    store = MessageStore(path, mapped_file_size_commitlog=FILE_SIZE, **overrides)
    try:
        store.put(Message(TOPIC, b"first"))
        if touch_bytes:
            current = store.commitlog.queue.last_file()
            touch(current, current.wrote_position, touch_bytes)
        if wait:
            wait_until_idle(store)
        yield store
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)


def check_appended(store: MessageStore, start: int, count: int, rec_size: int) -> None:
    """Every message went in, in the first file (no failed put, no roll)."""
    appended = store.max_commitlog_offset() - start
    if appended != count * rec_size or len(store.commitlog.queue.files) != 1:
        raise RuntimeError(
            f"expected {count} records of {rec_size} B in one file, got {appended} bytes "
            f"in {len(store.commitlog.queue.files)} files"
        )


def capacity(rec_size: int, unit: int) -> int:
    """Most messages (a multiple of `unit`) that fit in one file with room to spare."""
    return (FILE_SIZE - (1 << 20)) // rec_size // unit * unit


# ----------------------------------------------------------------------------- cases


class MinimalAppender:
    """The least a thread-safe Python append can do: take a lock, make one cffi call that
    copies pre-encoded bytes into the mapped file, move the position."""

    def __init__(self, mapped: MappedFile) -> None:
        self._lock = threading.Lock()
        self._ptr = mapped.ptr
        self._size = mapped.file_size
        self.position = 0

    def append(self, record: bytes) -> int:
        with self._lock:
            size = _copy(self._ptr, self.position, self._size, record, len(record))
            self.position += size
        return size


_copy = lib.mq_copy


class Cases:
    """Factories of the benchmark cases; each returns a Case (count -> seconds)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    # -- floors ------------------------------------------------------------------

    def file_write(self, body_size: int) -> Case:
        record = encode_record(os.urandom(body_size))

        def run(count: int) -> float:
            path = self.ws.new_path("plain")
            try:
                with open(path, "wb") as f:
                    write = f.write
                    start = time.perf_counter()
                    for _ in range(count):
                        write(record)
                    f.flush()
                    return time.perf_counter() - start
            finally:
                os.unlink(path)

        return run

    def copy_each(self, body_size: int, touched: bool = True) -> Case:
        record = encode_record(os.urandom(body_size))
        length = len(record)

        def run(count: int) -> float:
            with scratch_mapped_file(self.ws, count * length if touched else 0) as mapped:
                copy, ptr, size, position = _copy, mapped.ptr, mapped.file_size, 0
                start = time.perf_counter()
                for _ in range(count):
                    position += copy(ptr, position, size, record, length)
                elapsed = time.perf_counter() - start
            assert position == count * length
            return elapsed

        return run

    def copy_batch(self, body_size: int) -> Case:
        batch = b"".join(encode_record(os.urandom(body_size)) for _ in range(BATCH))
        length = len(batch)

        def run(count: int) -> float:
            calls = count // BATCH
            with scratch_mapped_file(self.ws, calls * length) as mapped:
                copy, ptr, size, position = _copy, mapped.ptr, mapped.file_size, 0
                start = time.perf_counter()
                for _ in range(calls):
                    position += copy(ptr, position, size, batch, length)
                elapsed = time.perf_counter() - start
            assert position == calls * length
            return elapsed

        return run

    def minimal_wrapper(self, body_size: int) -> Case:
        record = encode_record(os.urandom(body_size))

        def run(count: int) -> float:
            with scratch_mapped_file(self.ws, count * len(record)) as mapped:
                append = MinimalAppender(mapped).append
                start = time.perf_counter()
                for _ in range(count):
                    append(record)
                return time.perf_counter() - start

        return run

    # -- mqstore ASYNC -----------------------------------------------------------

    def put(self, body_size: int, touched: bool = True, wait: bool = True,
            **overrides) -> Case:
        msgs = make_messages(body_size)
        rec_size = record_size(body_size)

        def run(count: int) -> CaseResult:
            touch_bytes = count * rec_size if touched else 0
            with open_store(self.ws, touch_bytes, wait, **overrides) as store:
                put = store.put
                first = store.max_commitlog_offset()
                start = time.perf_counter()
                for _ in range(count // len(msgs)):
                    for msg in msgs:
                        put(msg)
                elapsed = time.perf_counter() - start
                backlog = dispatch_backlog(store)
                check_appended(store, first, count, rec_size)
            return elapsed, backlog

        return run

    def put_batch(self, body_size: int) -> Case:
        batches = [make_messages(body_size, BATCH) for _ in range(4)]
        rec_size = record_size(body_size)

        def run(count: int) -> CaseResult:
            with open_store(self.ws, count * rec_size) as store:
                put_batch = store.put_batch
                first = store.max_commitlog_offset()
                start = time.perf_counter()
                for _ in range(count // (BATCH * len(batches))):
                    for batch in batches:
                        put_batch(batch)
                elapsed = time.perf_counter() - start
                backlog = dispatch_backlog(store)
                check_appended(store, first, count, rec_size)
            return elapsed, backlog

        return run

    # -- SYNC --------------------------------------------------------------------

    def write_fdatasync(self, body_size: int) -> Case:
        record = encode_record(os.urandom(body_size))

        def run(count: int) -> float:
            path = self.ws.new_path("plain")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write, fdatasync = os.write, os.fdatasync
                start = time.perf_counter()
                for _ in range(count):
                    write(fd, record)
                    fdatasync(fd)
                return time.perf_counter() - start
            finally:
                os.close(fd)
                os.unlink(path)

        return run

    def copy_msync(self, body_size: int) -> Case:
        record = encode_record(os.urandom(body_size))
        length = len(record)

        def run(count: int) -> float:
            with scratch_mapped_file(self.ws, count * length) as mapped:
                copy, msync, ptr, size, position = _copy, lib.mq_msync, mapped.ptr, FILE_SIZE, 0
                start = time.perf_counter()
                for _ in range(count):
                    end = position + copy(ptr, position, size, record, length)
                    if msync(ptr, position, end) != 0:
                        raise OSError("msync failed")
                    position = end
                return time.perf_counter() - start

        return run

    def sync_put(self, body_size: int, threads: int) -> Case:
        per_thread_msgs = [make_messages(body_size, 256) for _ in range(threads)]
        rec_size = record_size(body_size)

        def run(count: int) -> CaseResult:
            per_thread = count // threads
            with open_store(self.ws, count * rec_size, flush_disk_type=SYNC_FLUSH) as store:
                failures: List[int] = []
                barrier = threading.Barrier(threads + 1)

                def worker(msgs: List[Message]) -> None:
                    put, ok, failed = store.put, PutStatus.PUT_OK, 0
                    barrier.wait()
                    for i in range(per_thread):
                        if put(msgs[i % len(msgs)]).status is not ok:
                            failed += 1
                    failures.append(failed)

                workers = [threading.Thread(target=worker, args=(msgs,))
                           for msgs in per_thread_msgs]
                for thread in workers:
                    thread.start()
                first = store.max_commitlog_offset()
                flushes = store.commitlog.flush_service.flush_count
                barrier.wait()
                start = time.perf_counter()
                for thread in workers:
                    thread.join()
                elapsed = time.perf_counter() - start
                flushes = store.commitlog.flush_service.flush_count - flushes
                check_appended(store, first, per_thread * threads, rec_size)
            if sum(failures):
                raise RuntimeError(f"{sum(failures)} SYNC puts were not PUT_OK")
            return elapsed, {"flushes_per_msg": flushes / (per_thread * threads)}

        return run


# ----------------------------------------------------------------------------- running


@dataclass
class Row:
    key: str
    label: str
    rate: float  # msg/s, best run
    record_bytes: int
    worst: float = 0.0  # msg/s, worst run (the spread says how noisy the machine was)
    details: Dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    ratio_to: str = ""
    goal: str = ""


@dataclass
class _Spec:
    row: Row
    case: Case
    probe: int
    unit: int
    max_count: int
    estimate: float = 0.0  # msg/s, to size the next run
    count: int = 0


class Runner:
    """Runs the cases of a section: one short calibration run each, then `repeats`
    rounds in which every case runs once for about `target` seconds (interleaved, so
    that a noisy minute hurts all cases of a section alike); keeps each case's best."""

    def __init__(self, quick: bool) -> None:
        self.repeats = 2 if quick else 7
        self.target = 0.12 if quick else 0.35
        self.rows: Dict[str, Row] = {}
        self._section: List[_Spec] = []

    def add(self, key: str, label: str, case: Case, *, record_bytes: int, probe: int,
            unit: int, max_count: int) -> None:
        row = self.rows[key] = Row(key, label, 0.0, record_bytes)
        self._section.append(_Spec(row, case, probe, unit, max_count))

    def run_section(self) -> None:
        specs, self._section = self._section, []
        for spec in specs:
            seconds, _ = _split(spec.case(spec.probe))
            spec.estimate = spec.probe / max(seconds, 1e-6)
        for _ in range(self.repeats):
            for spec in specs:
                target_count = int(spec.estimate * self.target) // spec.unit * spec.unit
                spec.count = max(spec.unit, min(target_count, spec.max_count))
                seconds, details = _split(spec.case(spec.count))
                rate = spec.count / seconds
                if rate > spec.row.rate:
                    spec.row.rate, spec.row.details = rate, details
                if not spec.row.worst or rate < spec.row.worst:
                    spec.row.worst = rate
                spec.estimate = max(spec.estimate, rate)
        for spec in specs:
            row = spec.row
            print(f"  {row.key:4} {row.label:62} {row.rate:>13,.0f} msg/s "
                  f"({spec.count} per run)", file=sys.stderr)

    def relate(self, key: str, to: str, goal: Union[int, float, None] = None) -> None:
        """Set a row's ratio to another row and, with `goal`, whether it meets it: a
        minimum msg/s (int) or a minimum ratio (float). Rows not run are skipped."""
        row, reference = self.rows.get(key), self.rows.get(to)
        if row is None:
            return
        if reference is not None:
            row.ratio, row.ratio_to = row.rate / reference.rate, to
        if isinstance(goal, int):
            met = row.rate >= goal
            row.goal = f"≥ {goal:,} msg/s"
        elif goal is not None and row.ratio is not None:
            met = row.ratio >= goal
            row.goal = f"≥ {goal:.2f} × {to}"
        else:
            return
        row.goal += ": met" if met else ": **not met**"


def _split(result: CaseResult) -> Tuple[float, Dict[str, float]]:
    return result if isinstance(result, tuple) else (result, {})


SECTIONS = ("floors", "async", "warmup", "sync")


def run_all(ws: Workspace, quick: bool, sections: Tuple[str, ...] = SECTIONS) -> Runner:
    cases = Cases(ws)
    runner = Runner(quick)
    small, large = record_size(SMALL), record_size(LARGE)
    batch_unit = BATCH * 4

    def add(key, label, case, size, probe, unit=MESSAGES_PER_LIST):
        record = small if size == SMALL else large
        runner.add(key, label, case, record_bytes=record, probe=probe, unit=unit,
                   max_count=capacity(record, unit))

    if "floors" in sections:
        settle("floors (pages touched before timing)")
        add("F1", "Python f.write(record) loop, 128 B", cases.file_write(SMALL), SMALL, 50_000)
        add("F2", "Python f.write(record) loop, 4 KiB", cases.file_write(LARGE), LARGE, 20_000)
        add("F3", "lib.mq_copy per message, 128 B", cases.copy_each(SMALL), SMALL, 50_000)
        add("F4", "lib.mq_copy per message, 4 KiB", cases.copy_each(LARGE), LARGE, 20_000)
        add("F5", "lib.mq_copy per batch of 256, 128 B", cases.copy_batch(SMALL), SMALL,
            262_144, batch_unit)
        add("F6", "lib.mq_copy per batch of 256, 4 KiB", cases.copy_batch(LARGE), LARGE,
            20_480, batch_unit)
        add("F7", "minimal wrapper (Lock + one cffi copy), 128 B",
            cases.minimal_wrapper(SMALL), SMALL, 50_000)
        add("F8", "minimal wrapper (Lock + one cffi copy), 4 KiB",
            cases.minimal_wrapper(LARGE), LARGE, 20_000)
        runner.run_section()
    if "async" in sections:
        settle("mqstore ASYNC_FLUSH (pages touched before timing)")
        add("A1", "mqstore put, 128 B", cases.put(SMALL), SMALL, 20_480)
        add("A2", "mqstore put, 4 KiB", cases.put(LARGE), LARGE, 10_240)
        add("A3", "mqstore put_batch (256), 128 B", cases.put_batch(SMALL), SMALL, 102_400,
            batch_unit)
        add("A4", "mqstore put_batch (256), 4 KiB", cases.put_batch(LARGE), LARGE, 20_480,
            batch_unit)
        runner.run_section()
    if "warmup" in sections:
        settle("page warm-up, 4 KiB")
        add("W1", "lib.mq_copy per message into fresh (untouched) pages",
            cases.copy_each(LARGE, touched=False), LARGE, 20_000)
        add("W2", "mqstore put into a fresh file (warm=False, preallocate=False)",
            cases.put(LARGE, touched=False, warm_mapped_file_enable=False,
                      preallocate_mapped_file=False), LARGE, 10_240)
        add("W3", "mqstore put, default config, new store (see note)",
            cases.put(LARGE, touched=False, wait=False), LARGE, 10_240)
        runner.run_section()
    if "sync" in sections:
        settle("SYNC_FLUSH, 128 B")
        add("S1", "os.write + os.fdatasync per message, plain file",
            cases.write_fdatasync(SMALL), SMALL, 512, 64)
        add("S2", "lib.mq_copy + msync per message, mapped file", cases.copy_msync(SMALL),
            SMALL, 512, 64)
        add("S3", "mqstore put, 1 thread (one msync per put)", cases.sync_put(SMALL, 1),
            SMALL, 512, 64)
        add("S4", f"mqstore put, {SYNC_THREADS} threads (group commit)",
            cases.sync_put(SMALL, SYNC_THREADS), SMALL, 2048, 64 * SYNC_THREADS)
        runner.run_section()
    for key, to, goal in RELATIONS:
        runner.relate(key, to, goal)
    return runner


#: (row, reference row, goal): the table's ratio column, and the goals for the 2-core CI
#: machine, each a minimum msg/s (an int) or a minimum ratio to the reference (a float).
RELATIONS: Tuple[Tuple[str, str, Union[int, float, None]], ...] = (
    ("F3", "F1", None),
    ("F5", "F3", None),
    ("F6", "F4", None),
    ("F7", "F3", None),
    ("F8", "F4", None),
    ("A1", "F7", 1_000_000),
    ("A2", "F8", 400_000),
    ("A3", "F5", 5_000_000),
    ("A4", "F6", None),
    ("W1", "F4", None),
    ("W2", "A2", None),
    ("W3", "A2", None),
    ("S2", "S1", None),
    ("S3", "S1", 0.9),
    ("S4", "S3", 5.0),
)


def settle(section: str) -> None:
    """Let the writeback and discards of earlier cases finish, then start a section."""
    os.sync()
    time.sleep(1.0)
    print(section, file=sys.stderr)


# ----------------------------------------------------------------------------- report


def machine_info(bench_dir: str, revision: str = "") -> List[Tuple[str, str]]:
    package_dir = os.path.dirname(mqstore.__file__)
    revision = revision or git_describe(package_dir)
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} cores ({usable} usable), {mem} RAM"),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        ("Bench dir filesystem", filesystem_of(bench_dir)),
        ("Python", platform.python_version()),
        ("cffi", cffi.__version__),
        ("mqstore", f"{mqstore.__version__} from {package_dir} ({revision})"),
    ]


def filesystem_of(path: str) -> str:
    """'fstype on device (mount point)' of the mount holding `path`, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("", "?", "?")
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            device, mount_point, fstype = line.split()[:3]
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, device, fstype)
    return f"{best[2]} on {best[1]} (mounted at {best[0]})"


def git_describe(directory: str) -> str:
    """`git describe` of the checkout holding `directory` (the mqstore measured)."""
    try:
        out = subprocess.run(
            ["git", "-C", directory, "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return f"git {out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def render(runner: Runner, info: List[Tuple[str, str]], load_before: str, load_after: str,
           quick: bool, elapsed: float) -> str:
    lines = [
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        *(f"{name}: {value}" for name, value in info),
        f"Load average (1, 5, 15 min): {load_before} before, {load_after} after",
        f"Mode: {'quick' if quick else 'full'}, best of {runner.repeats} runs of "
        f"~{runner.target} s each; whole run {elapsed:.0f} s",
        "",
        "| # | Measurement | msg/s (best) | worst run | MB/s | ratio | relative to | goal |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in runner.rows.values():
        label = row.label
        if "flushes_per_msg" in row.details:
            label += f"; {row.details['flushes_per_msg']:.3f} flushes per message"
        if row.details.get("dispatch_backlog_mb", 0) >= 0.1:
            label += f"; dispatcher {row.details['dispatch_backlog_mb']:.1f} MB behind at the end"
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        lines.append(
            f"| {row.key} | {label} | {row.rate:,.0f} | {row.worst:,.0f} "
            f"| {row.rate * row.record_bytes / 1e6:,.0f} "
            f"| {ratio} | {row.ratio_to} | {row.goal} |"
        )
    lines += [
        "",
        f"Records: {record_size(SMALL)} B for a 128 B body, {record_size(LARGE)} B for 4 KiB "
        f"(topic {TOPIC!r}, no properties); MB/s counts record bytes. Ratio = this row's "
        "msg/s / the other row's. Floors, A* and S* rows write into pages touched before "
        "timing, the allocator and dispatcher threads idle at the start; W1/W2 write into "
        "fresh pages of a new fallocate'd file; W3 is a new store with the default config, "
        "whose first CommitLog file is not warmed while the allocator warms the next one "
        "during the timed run.",
    ]
    return "\n".join(lines)


def profile_puts(ws: Workspace, count: int) -> str:
    """cProfile (top lines by tottime) of `count` single 128 B ASYNC puts."""
    msgs = make_messages(SMALL)
    with open_store(ws, count * record_size(SMALL)) as store:
        put = store.put

        def loop() -> None:
            for msg in itertools.islice(itertools.cycle(msgs), count):
                put(msg)

        profiler = cProfile.Profile()
        profiler.runcall(loop)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--dir", default=os.environ.get("MQSTORE_BENCH_DIR", HERE),
                        help="where to put the temporary store files (a real disk)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--revision", default="",
                        help="what is measured, when mqstore is not imported from a git "
                        "checkout (e.g. a `git archive` snapshot on PYTHONPATH)")
    parser.add_argument("--profile", type=int, metavar="N",
                        help="print a cProfile of N single 128 B puts instead")
    args = parser.parse_args(argv)
    sections = tuple(args.sections.split(","))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if filesystem_of(args.dir).startswith("tmpfs"):
        print(f"warning: {args.dir} is on tmpfs; the numbers will not be a disk's",
              file=sys.stderr)
    ws = Workspace(args.dir)
    try:
        if args.profile:
            print(profile_puts(ws, args.profile))
            return 0
        load_before = load_average()
        started = time.perf_counter()
        runner = run_all(ws, args.quick, sections)
        elapsed = time.perf_counter() - started
        info = machine_info(ws.path, args.revision)
        print(render(runner, info, load_before, load_average(), args.quick, elapsed))
    finally:
        ws.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
