"""The broker's JSON files under `<store>/config/`, read and written as RocketMQ does.

RocketMQ writes them with fastjson 1.x: pretty-printed with tabs, object fields in
alphabetical order, and maps with integer keys written with *unquoted* keys
(``{0:12,1:10}``), which is not strict JSON. `loads` accepts that; `dumps` produces it,
so a broker reading our files sees what it would have written itself.

Saving follows RocketMQ 4.x: write `<file>.tmp`, copy the current file to `<file>.bak`,
replace the file with the tmp. Loading falls back to `<file>.bak` when the file is
missing, empty or unreadable.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Any, Optional

log = logging.getLogger("mqstore.config")

# An unquoted integer key after `{` or `,` (fastjson's Map<Integer, ...>).
_BARE_INT_KEY = re.compile(r"([{,]\s*)(-?\d+)(\s*:)")


def loads(text: str) -> Any:
    """Parse fastjson output (unquoted integer keys allowed). Unquoted integer keys
    become ints; quoted keys stay strings, even "123". Raises ValueError when
    malformed."""
    # Quote bare integer keys outside strings: split on strings first so that text
    # inside a string value is never touched.
    parts = re.split(r'("(?:[^"\\]|\\.)*")', text)
    for i in range(0, len(parts), 2):
        parts[i] = _BARE_INT_KEY.sub(r'\1"\\u0000\2"\3', parts[i])
    data = json.loads("".join(parts))
    return _int_keys(data)


def _int_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {(int(k[1:]) if k.startswith("\0") else k): _int_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_int_keys(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Serialize like fastjson's PrettyFormat: tabs, fields sorted, int keys bare."""
    out: list = []
    _write(value, 0, out)
    return "".join(out)


def _write(value: Any, depth: int, out: list) -> None:
    if isinstance(value, dict):
        out.append("{")
        str_keys = sorted(k for k in value if isinstance(k, str))
        int_keys = [k for k in value if not isinstance(k, str)]
        first = True
        for key in str_keys + int_keys:
            if not first:
                out.append(",")
            first = False
            if isinstance(key, str):
                out.append("\n" + "\t" * (depth + 1) + json.dumps(key) + ":")
            elif isinstance(key, int) and not isinstance(key, bool):
                out.append(f"{key}:")
            else:
                raise TypeError(f"config keys must be str or int, got {type(key).__name__}")
            _write(value[key], depth + 1, out)
        out.append("\n" + "\t" * depth + "}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            out.append("\n" + "\t" * (depth + 1))
            _write(item, depth + 1, out)
        out.append("\n" + "\t" * depth + "]" if value else "]")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, (int, float, str)):
        out.append(json.dumps(value, ensure_ascii=False))
    else:
        raise TypeError(f"cannot write {type(value).__name__} to a config file")


def load(path: str) -> Optional[Any]:
    """The parsed content of `path`, else of `path.bak`, else None when neither holds
    a readable document."""
    for candidate in (path, path + ".bak"):
        try:
            with open(candidate, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot read %s: %s", candidate, exc)
            continue
        if not text.strip():
            continue
        try:
            return loads(text)
        except ValueError as exc:
            log.warning("cannot parse %s (%s); trying the backup", candidate, exc)
    return None


def save(path: str, value: Any, *, fsync: bool = True) -> None:
    """Write `value` to `path` the way RocketMQ 4.x does: tmp file, `.bak` copy of the
    old content, rename. A crash at any point leaves the file or its `.bak` whole."""
    text = dumps(value)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    if os.path.exists(path):
        shutil.copyfile(path, path + ".bak")
    os.replace(tmp, path)
