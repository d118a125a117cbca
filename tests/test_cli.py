"""The `mqstore` command line, run as a real subprocess against the golden RocketMQ
4.9.8 stores and against stores these tests write (and damage)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from golden import case_dir, copy_store, manifest, summary
from mqstore import Message, MessageStore, configfile
from mqstore.replay import iter_messages, parse_time

SMALL = dict(
    mapped_file_size_commitlog=64 * 1024,
    mapped_file_size_consume_queue=20 * 1024,
    max_hash_slot_num=512,
    max_index_num=2048,
)


def run(*args, cwd=None, check_rc=None, timeout=60):
    proc = subprocess.run(
        [sys.executable, "-m", "mqstore", *map(str, args)],
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout[-2000:], proc.stderr)
    return proc


def out(*args, **kwargs) -> str:
    return run(*args, check_rc=0, **kwargs).stdout.decode("utf-8")


def golden(case: str) -> Path:
    return case_dir(case) / "store"


def json_lines(text: str):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def body_of(row: dict) -> bytes:
    if row["bodyEncoding"] == "utf-8":
        return row["body"].encode("utf-8")
    assert row["bodyEncoding"] == "base64"
    return base64.b64decode(row["body"])


def snapshot(path: Path):
    return sorted(
        (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in path.rglob("*")
        if p.is_file()
    )


# ----------------------------------------------------------------------------- installed


def test_installed_console_script_runs(tmp_path):
    script = Path(sys.executable).parent / "mqstore"
    assert script.exists(), "pip install -e . installs the mqstore console script"
    proc = subprocess.run(
        [str(script), "topics", golden("basic"), "--json"], capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    topics = {row["topic"]: row["messages"] for row in json.loads(proc.stdout)}
    queued = Counter(r["topic"] for r in manifest("basic") if r["inConsumeQueue"])
    assert topics == dict(queued)


# ----------------------------------------------------------------------------- stat & co


@pytest.mark.parametrize("case", ["basic", "crash"])
def test_stat_reports_offsets_topics_and_shutdown(case):
    info = json.loads(out("stat", golden(case), "--json"))
    facts = summary(case)
    assert info["cleanShutdown"] is (not facts["abortFilePresentBeforeLoad"])
    assert info["commitlog"]["minOffset"] == facts["minPhyOffset"]
    assert info["commitlog"]["maxOffset"] == facts["maxPhyOffset"]
    assert info["commitlog"]["fileSize"] == 65536
    queues = Counter(q["topic"] for q in facts["queues"])
    counts = Counter()
    for q in facts["queues"]:
        counts[q["topic"]] += q["maxOffset"] - q["minOffset"]
    assert {t["topic"]: (t["queues"], t["messages"]) for t in info["topics"]} == {
        t: (queues[t], counts[t]) for t in queues
    }
    text = out("stat", golden(case))
    assert ("last shutdown  clean" in text) is (case == "basic")
    assert "NOT clean" in text or case == "basic"


def test_stat_shows_consumer_lag(tmp_path):
    path = tmp_path / "s"
    with MessageStore(path, **SMALL) as store:
        for i in range(10):
            store.put(Message("Orders", b"x%d" % i), queue_id=i % 2)
    configfile.save(
        str(path / "config" / "consumerOffset.json"),
        {"offsetTable": {"Orders@billing": {0: 2, 1: 5}}},
    )
    info = json.loads(out("stat", path, "--json"))
    (group,) = info["consumerGroups"]
    assert group["group"] == "billing" and group["topic"] == "Orders"
    assert group["lag"] == (5 - 2) + (5 - 5)
    assert [q["lag"] for q in group["queues"]] == [3, 0]
    assert "billing" in out("stat", path) and "lag 3" in out("stat", path)


def test_topics_and_queues_match_the_summary():
    text = out("topics", golden("basic"))
    assert "TopicA\t4\t305" in text.splitlines()
    rows = json.loads(out("queues", golden("basic"), "TopicA", "--json"))
    expected = [q for q in summary("basic")["queues"] if q["topic"] == "TopicA"]
    assert [(r["queueId"], r["minOffset"], r["maxOffset"], r["messages"]) for r in rows] == [
        (q["queueId"], q["minOffset"], q["maxOffset"], q["maxOffset"] - q["minOffset"])
        for q in expected
    ]
    table = out("queues", golden("basic"), "TopicA").splitlines()
    assert table[0].split() == ["queue", "min", "max", "messages"] and len(table) == 5
    missing = run("queues", golden("basic"), "NoSuchTopic")
    assert missing.returncode == 1 and b"NoSuchTopic" in missing.stderr


# ----------------------------------------------------------------------------- cat


COMPARED = [
    "topic",
    "queueId",
    "queueOffset",
    "commitLogOffset",
    "storeSize",
    "msgId",
    "uniqKey",
    "tags",
    "keys",
    "properties",
    "bornTimestamp",
    "storeTimestamp",
    "bornHost",
    "storeHost",
    "sysFlag",
    "reconsumeTimes",
    "flag",
    "bodyCRC",
    "preparedTransactionOffset",
    "bodyLength",
]


@pytest.mark.parametrize("case", ["basic", "crash"])
def test_cat_json_matches_the_manifest_field_for_field(case):
    rows = json_lines(out("cat", golden(case), "--format", "json"))
    expected = manifest(case)
    assert len(rows) == len(expected)
    encodings = Counter()
    for row, want in zip(rows, expected):
        for name in COMPARED:
            assert row[name] == want[name], (name, row["commitLogOffset"])
        body = body_of(row)
        encodings[row["bodyEncoding"]] += 1
        assert hashlib.sha256(body).hexdigest() == want["bodySha256"]
        if "bodyHex" in want:
            assert body.hex() == want["bodyHex"]
        assert row["magicCode"] == -626843481
    assert encodings["utf-8"] and encodings["base64"]  # both kinds of body occur


def test_cat_filters_by_queue_offset_tags_key_and_time():
    rows = manifest("basic")
    got = json_lines(
        out(
            "cat",
            golden("basic"),
            "--topic",
            "TopicA",
            "--queue",
            "1",
            "--from-offset",
            "5",
            "--format",
            "json",
        )
    )
    want = [
        r for r in rows if r["topic"] == "TopicA" and r["queueId"] == 1 and r["queueOffset"] >= 5
    ]
    assert [r["commitLogOffset"] for r in got] == [r["commitLogOffset"] for r in want]
    assert want  # the filter keeps something

    got = json_lines(
        out(
            "cat",
            golden("basic"),
            "--topic",
            "TopicA",
            "--tags",
            "TagA || TagB",
            "--format",
            "json",
        )
    )
    want = [r for r in rows if r["topic"] == "TopicA" and r["tags"] in ("TagA", "TagB")]
    assert [r["msgId"] for r in got] == [r["msgId"] for r in want] and want

    got = json_lines(out("cat", golden("basic"), "--key", "order-1", "--format", "json"))
    want = [
        r for r in rows if "order-1" in (r["keys"] or "").split(" ") or r["uniqKey"] == "order-1"
    ]
    assert [r["msgId"] for r in got] == [r["msgId"] for r in want] and want

    stamps = sorted(r["storeTimestamp"] for r in rows)
    since, until = stamps[100], stamps[200]
    iso_since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since / 1000))
    iso_since += f".{since % 1000:03d}Z"
    for since_arg in (str(since), iso_since):
        got = json_lines(
            out(
                "cat",
                golden("basic"),
                "--since",
                since_arg,
                "--until",
                str(until),
                "--format",
                "json",
            )
        )
        want = [r for r in rows if since <= r["storeTimestamp"] <= until]
        assert [r["commitLogOffset"] for r in got] == [r["commitLogOffset"] for r in want]

    assert len(json_lines(out("cat", golden("basic"), "--limit", "7", "--format", "json"))) == 7
    bad = run("cat", golden("basic"), "--since", "yesterday-ish")
    assert bad.returncode == 2 and b"--since" in bad.stderr and b"Traceback" not in bad.stderr


def test_cat_text_and_raw_formats():
    rows = [r for r in manifest("basic") if r["topic"] == "Topic_C-1"]
    text = out("cat", golden("basic"), "--topic", "Topic_C-1").splitlines()
    assert len(text) == len(rows)
    assert all(r["msgId"] in line and "Topic_C-1/" in line for r, line in zip(rows, text))
    raw = run("cat", golden("basic"), "--topic", "Topic_C-1", "--format", "raw", check_rc=0).stdout
    bodies = [
        json.loads(x)
        for x in out(
            "cat", golden("basic"), "--topic", "Topic_C-1", "--format", "json"
        ).splitlines()
    ]
    assert raw == b"".join(body_of(b) + b"\n" for b in bodies)


# ----------------------------------------------------------------------------- get


def test_get_by_msg_id_offset_and_key():
    row = manifest("basic")[5]
    (got,) = json_lines(out("get", golden("basic"), "--msg-id", row["msgId"]))
    assert got["commitLogOffset"] == row["commitLogOffset"] and got["msgId"] == row["msgId"]
    (got,) = json_lines(out("get", golden("basic"), "--offset", row["commitLogOffset"]))
    assert got["msgId"] == row["msgId"]
    got = json_lines(out("get", golden("basic"), "--key", "order-1", "--topic", "TopicA"))
    assert got and all("order-1" in g["keys"].split(" ") for g in got)
    assert got[0]["commitLogOffset"] == 160

    missing = run("get", golden("basic"), "--key", "no-such-key", "--topic", "TopicA")
    assert missing.returncode == 1 and b"no-such-key" in missing.stderr
    beyond = run("get", golden("basic"), "--offset", "10000000")
    assert beyond.returncode == 1
    bad = run("get", golden("basic"), "--msg-id", "XYZ")
    assert bad.returncode == 2
    assert len(bad.stderr.decode().strip().splitlines()) == 1 and b"Traceback" not in bad.stderr
    assert b"Traceback" in run("get", golden("basic"), "--msg-id", "XYZ", "--debug").stderr


# ----------------------------------------------------------------------------- replay


def test_replay_to_store_migrates_every_record(tmp_path):
    target = tmp_path / "copy"
    proc = run("replay", golden("basic"), "--to-store", target, check_rc=0)
    assert b"writing to" in proc.stderr and b"replayed 620 messages" in proc.stderr
    source = json_lines(out("cat", golden("basic"), "--format", "json"))
    copied = json_lines(out("cat", target, "--format", "json"))
    assert len(copied) == len(source) == 620
    same = [
        "topic",
        "queueId",
        "properties",
        "bornTimestamp",
        "bornHost",
        "storeHost",
        "sysFlag",
        "flag",
        "bodyCRC",
        "body",
        "bodyEncoding",
        "reconsumeTimes",
    ]
    for a, b in zip(source, copied):
        assert {k: a[k] for k in same} == {k: b[k] for k in same}
    # the properties string is kept byte for byte
    for a, b in zip(iter_messages(golden("basic")), iter_messages(target)):
        assert a.encoded_properties() == b.encoded_properties()
    assert run("verify", target).returncode == 0


def test_replay_to_python_callable_with_topic_and_rate(tmp_path):
    (tmp_path / "sink_mod.py").write_text(
        "import json\n"
        "def take(msg):\n"
        "    with open('seen.txt', 'a') as fh:\n"
        "        fh.write(f'{msg.topic} {msg.commitlog_offset}\\n')\n"
        "def boom(msg):\n"
        "    raise RuntimeError('sink refused')\n"
    )
    started = time.monotonic()
    proc = run(
        "replay",
        golden("basic"),
        "--to",
        "python:sink_mod:take",
        "--topic",
        "Topic_C-1",
        "--topic",
        "%RETRY%golden_consumer",
        "--rate",
        "400/s",
        cwd=tmp_path,
        check_rc=0,
    )
    elapsed = time.monotonic() - started
    seen = (tmp_path / "seen.txt").read_text().splitlines()
    want = [
        f"{r['topic']} {r['commitLogOffset']}"
        for r in manifest("basic")
        if r["topic"] in ("Topic_C-1", "%RETRY%golden_consumer")
    ]
    assert seen == want and b"replayed 125 messages" in proc.stderr
    assert elapsed >= (len(want) - 1) / 400  # the rate held it back
    failed = run("replay", golden("basic"), "--to", "python:sink_mod:boom", cwd=tmp_path)
    assert failed.returncode == 2 and b"sink refused" in failed.stderr
    assert b"Traceback" not in failed.stderr
    assert run("replay", golden("basic"), "--to", "python:nope:x", cwd=tmp_path).returncode == 2


def test_iter_messages_python_api():
    rows = manifest("basic")
    stamps = sorted(r["storeTimestamp"] for r in rows)
    got = list(
        iter_messages(golden("basic"), topic="TopicB", since=stamps[50], until=str(stamps[400]))
    )
    want = [
        r
        for r in rows
        if r["topic"] == "TopicB" and stamps[50] <= r["storeTimestamp"] <= stamps[400]
    ]
    assert [m.msg_id for m in got] == [r["msgId"] for r in want] and want
    assert parse_time("2026-11-23T00:00:00Z") == 1795392000000
    assert parse_time("1795392000000") == 1795392000000


def test_ctrl_c_stops_cleanly(tmp_path):
    (tmp_path / "slow_mod.py").write_text(
        "import time\ndef take(msg):\n    open('started', 'w').close()\n    time.sleep(0.2)\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mqstore",
            "replay",
            str(golden("basic")),
            "--to",
            "python:slow_mod:take",
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"interrupted" in err and b"Traceback" not in err


# ----------------------------------------------------------------------------- verify


@pytest.mark.parametrize("case", ["basic", "crash"])
def test_verify_golden_stores_are_sound(case):
    proc = run("verify", golden(case), check_rc=0)
    assert b": sound:" in proc.stdout
    report = json.loads(out("verify", golden(case), "--json"))
    assert report["ok"] and report["records"] == len(manifest(case))
    assert report["units"] == sum(r["inConsumeQueue"] for r in manifest(case))


def damaged_copy(tmp_path):
    return copy_store("basic", tmp_path)


def problems_of(path):
    proc = run("verify", path, "--json")
    assert proc.returncode == 1, proc.stdout
    report = json.loads(proc.stdout)
    assert not report["ok"]
    assert b"PROBLEM" in run("verify", path).stdout
    return report["problems"]


def patch(path: Path, position: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(position)
        fh.write(data)


def pick_row(predicate):
    return next(r for r in manifest("basic") if predicate(r))


BODY_AT = 88  # IPv4 hosts: the body follows 88 bytes of fixed fields


def test_verify_catches_a_flipped_body_byte(tmp_path):
    store = damaged_copy(tmp_path)
    row = pick_row(
        lambda r: r["bodyLength"] > 10 and r["commitLogOffset"] > 70000 and r["sysFlag"] == 0
    )
    offset = row["commitLogOffset"]
    file = store / "commitlog" / f"{offset - offset % 65536:020d}"
    position = offset % 65536 + BODY_AT + 3
    byte = file.read_bytes()[position]
    patch(file, position, bytes([byte ^ 0xFF]))
    (problem,) = problems_of(store)
    assert problem["file"] == f"commitlog/{file.name}" and problem["offset"] == offset % 65536
    assert "body CRC mismatch" in problem["what"] and str(row["bodyCRC"]) in problem["what"]


def test_verify_catches_a_truncated_record(tmp_path):
    store = damaged_copy(tmp_path)
    row = manifest("basic")[-1]
    offset = row["commitLogOffset"]
    file = store / "commitlog" / f"{offset - offset % 65536:020d}"
    os.truncate(file, offset % 65536 + 40)
    problems = problems_of(store)
    whats = [(p["file"], p["offset"], p["what"]) for p in problems]
    assert any(
        f == f"commitlog/{file.name}" and o == offset % 65536 and "past the readable" in w
        for f, o, w in whats
    ), whats
    assert any("file is" in w and "bytes" in w for _, _, w in whats)
    # its ConsumeQueue unit now points at nothing
    assert any(f.startswith(f"consumequeue/{row['topic']}/{row['queueId']}/") for f, _, _ in whats)


def test_verify_catches_a_bad_magic_code_and_resumes(tmp_path):
    store = damaged_copy(tmp_path)
    row = pick_row(lambda r: 10000 < r["commitLogOffset"] < 60000 and r["inConsumeQueue"])
    offset = row["commitLogOffset"]
    patch(store / "commitlog" / f"{0:020d}", offset + 4, b"\x12\x34\x56\x78")
    problems = problems_of(store)
    first = problems[0]
    assert first["file"] == f"commitlog/{0:020d}" and first["offset"] == offset
    assert "unknown magic code 0x12345678" in first["what"]
    unit_file = f"consumequeue/{row['topic']}/{row['queueId']}/{0:020d}"
    unit = [p for p in problems if p["file"] == unit_file]
    assert unit and unit[0]["offset"] == row["queueOffset"] * 20
    assert "no valid record starts there" in unit[0]["what"]
    assert len(problems) == 2  # checking resumed after the damaged record
    assert b"resumed checking" in run("verify", store).stdout


def test_verify_catches_consume_queue_units_pointing_wrong(tmp_path):
    store = damaged_copy(tmp_path)
    rows = [r for r in manifest("basic") if (r["topic"], r["queueId"]) == ("TopicA", 0)]
    cq = store / "consumequeue" / "TopicA" / "0" / f"{0:020d}"
    # unit 3 -> the record of unit 4; unit 6 -> the right record, wrong size
    patch(cq, 3 * 20, struct.pack(">q", rows[4]["commitLogOffset"]))
    patch(cq, 6 * 20 + 8, struct.pack(">i", rows[6]["storeSize"] + 1))
    problems = problems_of(store)
    assert [(p["file"], p["offset"]) for p in problems] == [
        ("consumequeue/TopicA/0/" + cq.name, 60),
        ("consumequeue/TopicA/0/" + cq.name, 120),
    ]
    assert (
        f"the record of this queue offset is at {rows[3]['commitLogOffset']}" in problems[0]["what"]
    )
    assert "queue offset 4" in problems[0]["what"]
    assert f"the record there is {rows[6]['storeSize']} bytes" in problems[1]["what"]


def test_verify_catches_a_damaged_checkpoint(tmp_path):
    store = damaged_copy(tmp_path)
    checkpoint = store / "checkpoint"
    data = checkpoint.read_bytes()
    patch(checkpoint, 0, struct.pack(">q", 4_000_000_000_000))
    (problem,) = problems_of(store)
    assert problem["file"] == "checkpoint" and problem["offset"] == 0
    assert "physicMsgTimestamp 4000000000000 is later" in problem["what"]
    checkpoint.write_bytes(data[:100])
    (problem,) = problems_of(store)
    assert problem["file"] == "checkpoint" and "100 bytes, expected 4096" in problem["what"]


def test_verify_reports_undispatched_records_of_a_clean_store(tmp_path):
    store = damaged_copy(tmp_path)
    cq = store / "consumequeue" / "TopicA" / "3"
    last = sorted(cq.iterdir())[-1]
    data = last.read_bytes()
    end = len(data.rstrip(b"\0"))
    end += -end % 20
    last.write_bytes(data[: end - 20] + bytes(len(data) - end + 20))
    (problem,) = problems_of(store)
    assert problem["file"] == "consumequeue/TopicA/3" and "1 records of TopicA/3" in problem["what"]
    (store / "abort").touch()  # after a crash this is normal: a note, not a problem
    assert run("verify", store).returncode == 0


def test_verify_is_fast_enough_to_use_the_native_scanner(tmp_path):
    report = json.loads(out("verify", golden("basic"), "--json"))
    assert report["seconds"] < 1.0


# ----------------------------------------------------------------------------- rebuild


@pytest.mark.parametrize("case", ["basic", "crash"])
def test_rebuild_gives_byte_identical_consume_queues(case, tmp_path):
    store = copy_store(case, tmp_path)
    shutil.rmtree(store / "consumequeue")
    shutil.rmtree(store / "index")
    proc = run(
        "rebuild",
        store,
        "-o",
        "max_hash_slot_num=512",
        "-o",
        "max_index_num=2048",
        "-o",
        "mapped_file_size_consume_queue=600",
        check_rc=0,
    )
    assert b"writing to" in proc.stderr and b"rebuilt" in proc.stderr
    want = sorted(
        p.relative_to(golden(case))
        for p in (golden(case) / "consumequeue").rglob("*")
        if p.is_file()
    )
    got = sorted(p.relative_to(store) for p in (store / "consumequeue").rglob("*") if p.is_file())
    assert got == want
    for rel in want:
        assert (store / rel).read_bytes() == (golden(case) / rel).read_bytes(), rel
    assert list((store / "index").iterdir())
    got = json_lines(out("get", store, "--key", "order-1", "--topic", "TopicA"))
    assert got and got[0]["commitLogOffset"] == 160  # the rebuilt index answers


def test_rebuild_keeps_detected_sizes_and_refuses_a_locked_store(tmp_path):
    store = copy_store("basic", tmp_path)
    before = (store / "consumequeue" / "TopicA" / "0" / f"{0:020d}").read_bytes()
    proc = run("rebuild", store, check_rc=0)  # sizes detected from the files it replaces
    assert b"ConsumeQueue files 600 bytes, index 512 slots" in proc.stderr
    assert (store / "consumequeue" / "TopicA" / "0" / f"{0:020d}").read_bytes() == before
    with MessageStore(
        store,
        mapped_file_size_commitlog=65536,
        mapped_file_size_consume_queue=600,
        max_hash_slot_num=512,
        max_index_num=2048,
    ):
        locked = run("rebuild", store)
        assert locked.returncode == 2 and b"lock" in locked.stderr.lower()
        assert (store / "consumequeue").is_dir()  # nothing deleted


# ----------------------------------------------------------------------------- read-only


def test_read_verbs_write_nothing_and_read_a_live_store(tmp_path):
    copy = copy_store("basic", tmp_path)
    before = snapshot(copy)
    for args in (
        ["stat"],
        ["topics"],
        ["queues", "TopicA"],
        ["cat", "--format", "json"],
        ["get", "--offset", "160"],
        ["verify"],
    ):
        run(args[0], copy, *args[1:], check_rc=0)
    assert snapshot(copy) == before

    live = tmp_path / "live"
    with MessageStore(live, **SMALL) as store:
        for i in range(50):
            store.put(Message("Live", b"m%d" % i, keys=f"k{i}"))
        rows = json_lines(out("cat", live, "--format", "json"))
        assert [r["body"] for r in rows] == [f"m{i}" for i in range(50)]
        info = json.loads(out("stat", live, "--json"))
        assert info["lockedByPid"] == os.getpid() and info["cleanShutdown"] is False


def test_errors_are_one_line_without_traceback(tmp_path):
    for args in (
        ["stat", tmp_path / "nope"],
        ["cat", tmp_path],
        ["verify", tmp_path / "x"],
        ["cat", golden("basic"), "--queue", "1"],
    ):
        proc = run(*args)
        assert proc.returncode == 2, args
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mqstore "), lines
    assert run("frobnicate").returncode == 2  # usage error from argparse


def test_progress_bar_only_on_a_terminal(tmp_path):
    import pty

    piped = run("verify", golden("basic"), check_rc=0)
    assert b"\r" not in piped.stderr
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mqstore", "verify", str(golden("basic"))],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    assert b"verify [" in shown and b"MB/s" in shown


def test_fast_json_lines_equal_the_message_record(tmp_path):
    from mqstore.cli import message_record
    from mqstore.jsonl import JsonLines, iter_chunks
    from mqstore.replay import open_readonly

    path = tmp_path / "s"
    with MessageStore(path, **SMALL) as store:
        store.put(
            Message(
                "T",
                b'say "hi"\\n\n\t\x00',
                tags='a"b',
                keys=["k\\1", "k2"],
                properties={"x": "\u00e9\U0001f600", "q": 'v"'},
            )
        )
        store.put(Message("T", b"\xff\xfe binary", tags="t"))
        store.put(Message("T", b"plain ascii", tags="t", keys="k", properties={"z": "1"}))
        store.put(Message("T", b""))
        template = next(store.iter_commitlog())
        for raw in (
            b"TAGS\x01first\x02K\x01v",
            b"A\x01b\x02TAGS\x01a\x02TAGS\x01b",
            b"TAGS\x01only",
            b"x\x01\x02\x01y\x02KEYS\x01k9",
            b"UNIQ_KEY\x01U1",
        ):
            template._props_raw, template._properties, template._encoded = raw, None, None
            assert store.put(template).ok
    for store_dir in (golden("basic"), golden("crash"), path):
        with open_readonly(store_dir) as store:
            fast: list = []
            lines = JsonLines()
            for chunk in iter_chunks(store, store.min_commitlog_offset()):
                lines.lines(*chunk, fast.append, None)
            slow = [message_record(m) for m in store.iter_commitlog()]
        assert [json.loads(line) for line in b"".join(fast).splitlines()] == slow
        assert len(slow) > 3


def test_verify_takes_a_torn_tail_after_a_crash_for_a_note(tmp_path):
    path = tmp_path / "s"
    with MessageStore(path, **SMALL) as store:
        ends = [store.put(Message("T", b"body %d" % i)) for i in range(20)]
    last = ends[-1]
    end = last.commitlog_offset + last.store_size
    file = path / "commitlog" / f"{0:020d}"
    torn = bytes(file.read_bytes()[last.commitlog_offset : end])[:60]
    patch(file, end, torn)  # the head of one more record, cut short: a torn write
    (problem,) = problems_of(path)  # a clean shutdown cannot leave this
    assert problem["offset"] == end and problem["file"] == f"commitlog/{file.name}"
    (path / "abort").touch()  # after a crash it is what recovery cuts
    proc = run("verify", path, check_rc=0)
    assert b"torn tail" in proc.stdout and b": sound:" in proc.stdout
    # damage before the last record stays a problem even after a crash
    first = ends[3].commitlog_offset
    patch(file, first + 4, b"\0\0\0\1")
    problems = problems_of(path)
    assert [p["offset"] for p in problems if p["file"].startswith("commitlog")] == [first]


def test_bad_option_is_one_line(tmp_path):
    proc = run("stat", golden("basic"), "-o", "no_such_setting=1")
    assert proc.returncode == 2 and b"bad -o setting" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_verify_catches_a_wrong_physical_offset_field(tmp_path):
    store = damaged_copy(tmp_path)
    row = pick_row(lambda r: 1000 < r["commitLogOffset"] < 60000 and r["inConsumeQueue"])
    offset = row["commitLogOffset"]
    patch(store / "commitlog" / f"{0:020d}", offset + 28, struct.pack(">q", offset + 8))
    problems = problems_of(store)
    assert problems[0] == {
        "file": f"commitlog/{0:020d}",
        "offset": offset,
        "what": f"PHYSICALOFFSET field says {offset + 8}, the record is at CommitLog "
        f"offset {offset}",
    }
