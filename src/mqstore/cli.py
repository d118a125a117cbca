"""The `mqstore` command: inspect, verify, rebuild and replay RocketMQ-format store
directories. See docs/cli.md.

Read-only unless the verb writes (`rebuild`, `replay --to-store`), which says so on
stderr. Exit codes: 0 success; 1 `verify` found problems or `get` found nothing;
2 an error (one line on stderr; `--debug` shows the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import itertools
import json
import logging
import os
import shutil
import sys
import time
from typing import Callable, Dict, Optional, Sequence

from . import __version__, configfile
from .errors import MQStoreError
from .message import PROPERTY_KEYS, MessageExt
from .reader import parse_tags
from .replay import (
    iter_messages,
    load_callable,
    open_readonly,
    parse_time,
    replay,
    start_offset,
    store_sink,
)
from .storedir import (
    COMMITLOG_DIR,
    CONSUMEQUEUE_DIR,
    INDEX_DIR,
    abort_present,
    detect_config,
    lock_holder,
)

EXIT_OK, EXIT_FOUND_NOTHING, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """An error to report as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- output


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, enabled: Optional[bool] = None) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self.shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.shown < 0.1 and done < total:
            return
        self.shown = now
        fraction = done / total if total else 1.0
        width = 30
        filled = int(width * fraction)
        rate = done / max(now - self.started, 1e-9) / 1e6
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{fraction:6.1%} {rate:8.1f} MB/s"
        )
        sys.stderr.flush()

    def count(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.shown < 0.1:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        sys.stderr.write(f"\r{self.label} {done:,} messages, {rate:,.0f}/s")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _iso(ms: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_record(msg: MessageExt) -> Dict[str, object]:
    """Every field of a stored message as a JSON-ready dict (RocketMQ's field names).
    The body is text when it is valid UTF-8 (`bodyEncoding` "utf-8"), else base64
    (`bodyEncoding` "base64"); compressed bodies are given as stored."""
    body = msg.body
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    props = msg._props()
    return {
        "topic": msg.topic,
        "queueId": msg.queue_id,
        "queueOffset": msg.queue_offset,
        "commitLogOffset": msg.commitlog_offset,
        "storeSize": msg.store_size,
        "msgId": msg.msg_id,
        "uniqKey": msg.uniq_key,
        "tags": msg.tags,
        "keys": props.get(PROPERTY_KEYS),
        "properties": props,
        "bornTimestamp": msg.born_timestamp,
        "storeTimestamp": msg.store_timestamp,
        "bornHost": msg.born_host,
        "storeHost": msg.store_host,
        "sysFlag": msg.sys_flag,
        "reconsumeTimes": msg.reconsume_times,
        "flag": msg.flag,
        "bodyCRC": msg.body_crc,
        "preparedTransactionOffset": msg.prepared_transaction_offset,
        "magicCode": msg.magic_code,
        "bodyLength": len(body),
        "bodyEncoding": encoding,
        "body": text,
    }


def _preview(body: bytes, width: int = 60) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes, binary>"
    shown = repr(text[:width])
    return shown + ("..." if len(text) > width else "")


def _text_line(msg: MessageExt) -> str:
    parts = [
        f"{msg.commitlog_offset:>12}",
        f"{msg.topic}/{msg.queue_id}@{msg.queue_offset}",
        _iso(msg.store_timestamp),
        msg.msg_id,
    ]
    if msg.tags is not None:
        parts.append(f"tags={msg.tags}")
    keys = msg._props().get(PROPERTY_KEYS)
    if keys:
        parts.append(f"keys={keys}")
    parts.append(_preview(msg.body))
    return " ".join(parts)


class MessageWriter:
    """Writes messages to a binary stream in one of the formats text, json, raw."""

    def __init__(self, fmt: str, stream) -> None:
        self.stream = stream
        self.write: Callable[[MessageExt], None] = getattr(self, "_" + fmt)
        self._dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def _text(self, msg: MessageExt) -> None:
        self.stream.write((_text_line(msg) + "\n").encode("utf-8", "replace"))

    def _json(self, msg: MessageExt) -> None:
        self.stream.write(self._dumps(message_record(msg)).encode("utf-8", "surrogatepass") + b"\n")

    def _raw(self, msg: MessageExt) -> None:
        self.stream.write(msg.body)
        self.stream.write(b"\n")


def _stdout_binary():
    return sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout


def _say(text: str) -> None:
    """A status line on stderr (never mixed with the data on stdout)."""
    print(text, file=sys.stderr, flush=True)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# ----------------------------------------------------------------------------- helpers


def _overrides(args) -> Dict[str, object]:
    """-o NAME=VALUE settings as StoreConfig keyword arguments."""
    result: Dict[str, object] = {}
    for item in getattr(args, "option", None) or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"-o {item!r}: expected NAME=VALUE (a StoreConfig field)")
        name = name.strip().replace("-", "_")
        text = value.strip()
        parsed: object = text
        if text.lstrip("-").isdigit():
            parsed = int(text)
        elif text.lower() in ("true", "false"):
            parsed = text.lower() == "true"
        result[name] = parsed
    return result


def _config(args, path: Optional[str] = None):
    """The StoreConfig for a directory: sizes from its files, -o settings on top."""
    try:
        return detect_config(path or args.dir, **_overrides(args))
    except (TypeError, ValueError) as exc:
        raise CliError(f"bad -o setting: {exc}") from None


def _open(args):
    return open_readonly(args.dir, _config(args))


def _check_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise CliError(f"{path}: no such store directory")
    if not os.path.isdir(os.path.join(path, COMMITLOG_DIR)):
        raise CliError(f"{path}: not a store directory (no {COMMITLOG_DIR}/)")


def _dir_usage(path: str) -> Dict[str, int]:
    files = total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(root, name))
                files += 1
            except OSError:
                pass
    return {"files": files, "bytes": total}


def _consumer_offsets(path: str) -> Dict[str, Dict[int, int]]:
    data = configfile.load(os.path.join(path, "config", "consumerOffset.json"))
    if not isinstance(data, dict):
        return {}
    table = data.get("offsetTable")
    return table if isinstance(table, dict) else {}


# ----------------------------------------------------------------------------- verbs


def cmd_stat(args) -> int:
    _check_dir(args.dir)
    path = args.dir
    with _open(args) as store:
        topics = store.topics()
        topic_rows = []
        for topic, queue_ids in topics.items():
            count = sum(store.max_offset(topic, q) - store.min_offset(topic, q) for q in queue_ids)
            topic_rows.append({"topic": topic, "queues": len(queue_ids), "messages": count})
        groups = []
        for key, offsets in sorted(_consumer_offsets(path).items()):
            topic, _, group = str(key).partition("@")
            lag = 0
            queues = []
            for queue_id, consumed in sorted(offsets.items()):
                queue_id = int(queue_id)
                queue_lag = max(0, store.max_offset(topic, queue_id) - int(consumed))
                lag += queue_lag
                queues.append(
                    {
                        "queueId": queue_id,
                        "consumerOffset": int(consumed),
                        "maxOffset": store.max_offset(topic, queue_id),
                        "lag": queue_lag,
                    }
                )
            groups.append({"group": group, "topic": topic, "lag": lag, "queues": queues})
        checkpoint = store.checkpoint
        holder = lock_holder(path)
        info = {
            "path": os.path.abspath(path),
            "cleanShutdown": not abort_present(path),
            "lockedByPid": holder,
            "commitlog": {
                **_dir_usage(os.path.join(path, COMMITLOG_DIR)),
                "fileSize": store.config.mapped_file_size_commitlog,
                "minOffset": store.min_commitlog_offset(),
                "maxOffset": store.max_commitlog_offset(),
            },
            "consumequeue": _dir_usage(os.path.join(path, CONSUMEQUEUE_DIR)),
            "index": _dir_usage(os.path.join(path, INDEX_DIR)),
            "checkpoint": {
                "physicMsgTimestamp": checkpoint.physic_msg_timestamp,
                "logicsMsgTimestamp": checkpoint.logics_msg_timestamp,
                "indexMsgTimestamp": checkpoint.index_msg_timestamp,
            },
            "topics": topic_rows,
            "consumerGroups": groups,
        }
    if args.json:
        _print_json(info)
        return EXIT_OK
    cl = info["commitlog"]
    print(f"store          {info['path']}")
    shutdown = "clean" if info["cleanShutdown"] else "NOT clean (abort file present)"
    print(f"last shutdown  {shutdown}")
    if holder:
        print(f"in use         locked by pid {holder}")
    print(
        f"commitlog      {cl['files']} files, {cl['bytes']:,} bytes (file size "
        f"{cl['fileSize']:,}), offsets {cl['minOffset']:,}..{cl['maxOffset']:,}"
    )
    for name in ("consumequeue", "index"):
        usage = info[name]
        print(f"{name:<14} {usage['files']} files, {usage['bytes']:,} bytes")
    cp = info["checkpoint"]
    print(
        f"checkpoint     physic {_iso(cp['physicMsgTimestamp'])}, logics "
        f"{_iso(cp['logicsMsgTimestamp'])}, index {_iso(cp['indexMsgTimestamp'])}"
    )
    print(f"topics         {len(topic_rows)}")
    for row in topic_rows:
        print(f"  {row['topic']:<40} {row['queues']:>4} queues {row['messages']:>12,} messages")
    if groups:
        print(f"consumer groups {len(groups)}")
        for group in groups:
            print(f"  {group['group']:<30} {group['topic']:<30} lag {group['lag']:,}")
    return EXIT_OK


def cmd_topics(args) -> int:
    _check_dir(args.dir)
    with _open(args) as store:
        rows = []
        for topic, queue_ids in store.topics().items():
            count = sum(store.max_offset(topic, q) - store.min_offset(topic, q) for q in queue_ids)
            rows.append({"topic": topic, "queues": len(queue_ids), "messages": count})
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['topic']}\t{row['queues']}\t{row['messages']}")
    return EXIT_OK


def cmd_queues(args) -> int:
    _check_dir(args.dir)
    with _open(args) as store:
        queue_ids = store.topics().get(args.topic)
        if not queue_ids:
            raise CliError(f"no topic {args.topic!r} in {args.dir}", EXIT_FOUND_NOTHING)
        rows = [
            {
                "queueId": q,
                "minOffset": store.min_offset(args.topic, q),
                "maxOffset": store.max_offset(args.topic, q),
                "messages": store.max_offset(args.topic, q) - store.min_offset(args.topic, q),
            }
            for q in queue_ids
        ]
    if args.json:
        _print_json(rows)
    else:
        print("queue\tmin\tmax\tmessages")
        for row in rows:
            print(f"{row['queueId']}\t{row['minOffset']}\t{row['maxOffset']}\t{row['messages']}")
    return EXIT_OK


def cmd_cat(args) -> int:
    _check_dir(args.dir)
    if args.queue is not None and args.topic is None:
        raise CliError("--queue needs --topic")
    config = _config(args)
    writer = MessageWriter(args.format, _stdout_binary())
    limit = args.limit
    if limit is not None and limit <= 0:
        return EXIT_OK
    if args.format == "json":
        return _cat_json(args, config, limit)
    messages = iter_messages(
        args.dir,
        topic=args.topic,
        since=_time_arg(args.since, "--since"),
        until=_time_arg(args.until, "--until"),
        queue_id=args.queue,
        from_offset=args.from_offset,
        tags=args.tags,
        key=args.key,
        config=config,
    )
    try:
        for msg in itertools.islice(messages, limit):
            writer.write(msg)
    finally:
        messages.close()
    _stdout_binary().flush()
    return EXIT_OK


def _cat_json(args, config, limit: Optional[int]) -> int:
    """cat --format json through the fast path (JsonLines over scanned records)."""
    from .jsonl import JsonLines, iter_chunks

    since = _time_arg(args.since, "--since")
    until = _time_arg(args.until, "--until")
    tag_filter = parse_tags(args.tags)
    lines = JsonLines(
        topics=frozenset([args.topic]) if args.topic is not None else None,
        queue_id=args.queue,
        since=since,
        until=until,
        tags=tag_filter[1] if tag_filter else None,
        key=args.key,
    )
    stream = _stdout_binary()
    remaining = limit
    with open_readonly(args.dir, config) as store:
        offset = start_offset(store, args.topic, args.queue, args.from_offset, since)
        for chunk in iter_chunks(store, offset):
            batch: list = []
            emitted = lines.lines(*chunk, batch.append, remaining)
            stream.write(b"".join(batch))
            if remaining is not None:
                remaining -= emitted
                if remaining <= 0:
                    break
            if lines.past_until:
                break
    stream.flush()
    return EXIT_OK


def _time_arg(value: Optional[str], option: str) -> Optional[int]:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from None


def cmd_get(args) -> int:
    _check_dir(args.dir)
    chosen = [args.msg_id is not None, args.offset is not None, args.key is not None]
    if sum(chosen) != 1:
        raise CliError("give exactly one of --msg-id, --offset, --key (with --topic)")
    if args.key is not None and args.topic is None:
        raise CliError("--key needs --topic")
    writer = MessageWriter(args.format, _stdout_binary())
    with _open(args) as store:
        if args.msg_id is not None:
            try:
                found = store.look_by_msg_id(args.msg_id)
            except ValueError as exc:
                raise CliError(f"--msg-id: {exc}") from None
            messages = [found] if found is not None else []
            what = f"message id {args.msg_id}"
        elif args.offset is not None:
            found = store.look_by_offset(args.offset)
            messages = [found] if found is not None else []
            what = f"record at CommitLog offset {args.offset}"
        else:
            messages = store.query_by_key(args.topic, args.key, max_msgs=args.max)
            what = f"message of {args.topic} with key {args.key!r}"
        if not messages:
            raise CliError(f"no {what} in {args.dir}", EXIT_FOUND_NOTHING)
        for msg in messages:
            writer.write(msg)
    _stdout_binary().flush()
    return EXIT_OK


def _parse_rate(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    value = text[:-2] if text.endswith("/s") else text
    try:
        rate = float(value)
    except ValueError:
        raise CliError(f"--rate {text!r}: expected N or N/s (messages per second)") from None
    if rate <= 0:
        raise CliError(f"--rate {text!r}: must be positive")
    return rate


def cmd_replay(args) -> int:
    _check_dir(args.dir)
    rate = _parse_rate(args.rate)
    if (args.to is None) == (args.to_store is None):
        raise CliError("give exactly one of --to python:module:function, --to-store DIR")
    messages = iter_messages(
        args.dir,
        topic=args.topic or None,
        since=_time_arg(args.since, "--since"),
        until=_time_arg(args.until, "--until"),
        config=_config(args),
    )
    progress = Progress("replay")
    counter = [0]

    def tick(_msg) -> None:
        counter[0] += 1
        progress.count(counter[0])

    if args.to is not None:
        try:
            sink = load_callable(args.to)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        try:
            count = replay(messages, _guarded(sink, args.to), rate, tick)
        finally:
            progress.finish()
        _say(f"replayed {count} messages to {args.to}")
        return EXIT_OK
    target_dir = args.to_store
    if os.path.exists(target_dir) and os.path.realpath(target_dir) == os.path.realpath(args.dir):
        raise CliError("--to-store must be another directory than the source")
    from .store import MessageStore

    source_sizes = _config(args)
    if os.path.isdir(os.path.join(target_dir, COMMITLOG_DIR)):
        target_config = _config(args, target_dir)
    else:
        target_config = source_sizes
    _say(f"writing to {os.path.abspath(target_dir)}")
    # A copy, not a broker: records are written as they were, nothing is delivered or
    # checked back while replaying (the target's next normal open does that, and its
    # start-up check skips delayed messages whose delivered copy was replayed too).
    target_config = target_config.replace(**_NO_SERVICES)
    with MessageStore(target_dir, target_config) as target:
        try:
            count = replay(messages, store_sink(target), rate, tick)
        finally:
            progress.finish()
    _say(f"replayed {count} messages into {target_dir}")
    return EXIT_OK


def _guarded(sink, spec: str):
    def call(msg: MessageExt) -> None:
        try:
            sink(msg)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            raise CliError(
                f"{spec} failed on the message at CommitLog offset "
                f"{msg.commitlog_offset}: {type(exc).__name__}: {exc}"
            ) from exc

    return call


def cmd_verify(args) -> int:
    from .verify import verify_store

    _check_dir(args.dir)
    config = _config(args)
    progress = Progress("verify")
    try:
        report = verify_store(args.dir, progress, config.message_delay_level)
    finally:
        progress.finish()
    if args.json:
        _print_json(
            {
                "ok": report.ok,
                "problems": [vars(p) for p in report.problems],
                "notes": report.notes,
                "records": report.records,
                "units": report.units,
                "commitlogBytes": report.commitlog_bytes,
                "seconds": report.seconds,
            }
        )
    else:
        for problem in report.problems:
            print(f"PROBLEM {problem}")
        for note in report.notes:
            print(f"note    {note}")
        verdict = "sound" if report.ok else f"{len(report.problems)} problem(s)"
        mb = report.commitlog_bytes / 1e6
        print(
            f"{args.dir}: {verdict}: {report.records:,} records in "
            f"{report.commitlog_files} CommitLog files ({mb:,.1f} MB), {report.units:,} "
            f"units in {report.queues} queues, checked in {report.seconds:.2f} s"
        )
    return EXIT_OK if report.ok else EXIT_FOUND_NOTHING


#: Opening a store to rebuild or fill it must not add records of its own.
_NO_SERVICES = {"schedule_delivery_enable": False, "transaction_check_enable": False}


def cmd_rebuild(args) -> int:
    from .lockfile import StoreLock
    from .store import MessageStore

    _check_dir(args.dir)
    path = args.dir
    if not os.access(path, os.W_OK):
        raise CliError(f"{path} is not writable")
    config = _config(args, path)  # before the files are gone
    lock = StoreLock(path)
    lock.acquire()  # StoreLockedError (a live writer) before anything is deleted
    try:
        _say(
            f"writing to {os.path.abspath(path)}: deleting {CONSUMEQUEUE_DIR}/ and "
            f"{INDEX_DIR}/, rebuilding them from the CommitLog (CommitLog files "
            f"{config.mapped_file_size_commitlog} bytes, ConsumeQueue files "
            f"{config.mapped_file_size_consume_queue} bytes, index "
            f"{config.max_hash_slot_num} slots / {config.max_index_num} entries)"
        )
        for name in (CONSUMEQUEUE_DIR, INDEX_DIR):
            target = os.path.join(path, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
    finally:
        lock.release()
    started = time.monotonic()
    with MessageStore(path, config.replace(**_NO_SERVICES)) as store:
        report = store.recovery
        queues = sum(len(q) for q in store.topics().values())
    _say(
        f"rebuilt {queues} ConsumeQueues and the index from {report.records_dispatched:,} "
        f"records in {time.monotonic() - started:.2f} s"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqstore",
        description="Inspect, verify, rebuild and replay RocketMQ-format store directories. "
        "Read-only unless the verb says it writes (rebuild, replay --to-store).",
    )
    parser.add_argument("--version", action="version", version=f"mqstore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("dir", metavar="DIR", help="store directory")
    common.add_argument(
        "-o",
        "--option",
        action="append",
        metavar="NAME=VALUE",
        help="StoreConfig setting (file sizes are detected from the files; "
        "e.g. -o max_hash_slot_num=512)",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("stat", parents=[common], help="files, offsets, topics, consumer lag")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_stat)

    p = verbs.add_parser("topics", parents=[common], help="topics with queue and message counts")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_topics)

    p = verbs.add_parser("queues", parents=[common], help="queues of a topic: offsets, counts")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_queues)

    p = verbs.add_parser("cat", parents=[common], help="print messages in CommitLog order")
    p.add_argument("--topic")
    p.add_argument("--queue", type=int, help="queue id (with --topic)")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--from-offset",
        type=int,
        metavar="O",
        help="queue offset with --topic and --queue, else CommitLog offset",
    )
    start.add_argument("--since", metavar="TIME", help="store time, ISO-8601 or epoch ms")
    p.add_argument("--until", metavar="TIME", help="store time, ISO-8601 or epoch ms")
    p.add_argument("--tags", metavar="EXPR", help="'*' or 'a || b'")
    p.add_argument("--key", metavar="K", help="a KEYS entry or the UNIQ_KEY")
    p.add_argument("--limit", type=int, metavar="N")
    p.add_argument("--format", choices=("text", "json", "raw"), default="text")
    p.set_defaults(func=cmd_cat)

    p = verbs.add_parser("get", parents=[common], help="one message by id, offset or key")
    p.add_argument("--msg-id", metavar="ID", help="offset message id")
    p.add_argument("--offset", type=int, metavar="PHYS", help="CommitLog offset")
    p.add_argument("--key", metavar="K", help="key (with --topic), through the index")
    p.add_argument("--topic")
    p.add_argument("--max", type=int, default=32, help="most messages for --key")
    p.add_argument("--format", choices=("text", "json", "raw"), default="json")
    p.set_defaults(func=cmd_get)

    p = verbs.add_parser(
        "replay", parents=[common], help="feed messages to python:module:function or another store"
    )
    p.add_argument("--to", metavar="python:module:function")
    p.add_argument("--to-store", metavar="OTHER_DIR", help="writes: puts into this store")
    p.add_argument("--topic", action="append", help="only this topic (repeatable)")
    p.add_argument("--since", metavar="TIME")
    p.add_argument("--until", metavar="TIME")
    p.add_argument("--rate", metavar="N/s", help="at most N messages per second")
    p.set_defaults(func=cmd_replay)

    p = verbs.add_parser(
        "verify", parents=[common], help="check records, CRCs, ConsumeQueue links, checkpoint"
    )
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_verify)

    p = verbs.add_parser(
        "rebuild",
        parents=[common],
        help="writes: rebuild ConsumeQueues and index from the CommitLog",
    )
    p.set_defaults(func=cmd_rebuild)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (also used as the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    # The store logs recovery details (warnings when opening a crashed or live
    # store): shown with --debug; otherwise `stat` and `verify` report what matters.
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.ERROR,
        format="mqstore: %(levelname)s: %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _say("mqstore: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`mqstore cat ... | head`): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except CliError as exc:
        if debug:
            raise
        _say(f"mqstore {args.verb}: {exc}")
        return exc.code
    except (MQStoreError, OSError, ValueError, TypeError) as exc:
        if debug:
            raise
        _say(f"mqstore {args.verb}: error: {exc}")
        return EXIT_ERROR
