"""Access to the golden stores written by RocketMQ 4.9.8 (../shared/golden)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

import pytest

from mqstore import codec
from mqstore._native import ffi
from mqstore.message import MessageExt

GOLDEN_ROOT = Path(__file__).resolve().parents[2] / "shared" / "golden" / "rocketmq-4.9.8"
CASES = ["basic", "crash"]
#: The MessageStoreConfig the golden stores were written with (golden README), with
#: delay delivery and transaction checks off, as the golden README's reader opened them
#: (in the SLAVE role): tests compare the files with what RocketMQ wrote, so nothing may
#: add records behind their back.
GOLDEN_CONFIG = dict(
    mapped_file_size_commitlog=65536,
    mapped_file_size_consume_queue=600,
    max_hash_slot_num=512,
    max_index_num=2048,
    schedule_delivery_enable=False,
    transaction_check_enable=False,
)
GOLDEN_FILE_SIZE = 65536


def require_golden() -> Path:
    if not GOLDEN_ROOT.is_dir():
        pytest.skip(
            f"golden stores not found at {GOLDEN_ROOT} (shared/ must sit beside the project)"
        )
    return GOLDEN_ROOT


def case_dir(case: str) -> Path:
    return require_golden() / case


def manifest(case: str) -> List[dict]:
    with open(case_dir(case) / "manifest.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def summary(case: str) -> dict:
    with open(case_dir(case) / "store-summary.json", encoding="utf-8") as fh:
        return json.load(fh)


def commitlog_files(case: str) -> List[Path]:
    directory = case_dir(case) / "store" / "commitlog"
    return sorted(directory.iterdir())


def decode_commitlog(case: str):
    """Every record of a golden CommitLog as (MessageExt, raw record bytes), in order,
    plus the blank records as (offset, declared size)."""
    records, blanks = [], []
    for path in commitlog_files(case):
        data = path.read_bytes()
        ptr = ffi.from_buffer(data)
        start = int(path.name)
        position = 0
        while True:
            result = codec.scan(ptr, len(data), position, 1024, codec.SCAN_CHECK_CRC)
            for i in range(result.count):
                message = MessageExt._from_fields(ptr, result.fields, i)
                base = i * codec.FIELDS
                pos, size = result.fields[base], result.fields[base + 1]
                records.append((message, data[pos : pos + size], start + pos))
            position = result.stop_pos
            if result.stop_reason == codec.STOP_LIMIT:
                continue
            if result.stop_reason == codec.STOP_BLANK:
                declared = int.from_bytes(data[position : position + 4], "big", signed=True)
                blanks.append((start + position, declared))
            else:
                assert result.stop_reason == codec.STOP_ZERO, (
                    path,
                    position,
                    codec.STOP_REASONS[result.stop_reason],
                )
            break
    return records, blanks


def copy_store(case: str, dest: Path) -> Path:
    """A writable copy of a golden store directory."""
    import shutil

    target = dest / case
    shutil.copytree(case_dir(case) / "store", target)
    for root, dirs, files in os.walk(target):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
    os.chmod(target, 0o755)
    return target
