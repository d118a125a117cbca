"""config/*.json as fastjson writes them: bare integer keys, tabs, .bak fallback."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from golden import GOLDEN_ROOT
from mqstore import configfile

BROKER_OFFSETS = (
    '{\n\t"offsetTable":{\n\t\t"RMQ_SYS_TRANS_OP_HALF_TOPIC@CID_RMQ_SYS_TRANS":{0:7\n\t\t},'
    '\n\t\t"RMQ_SYS_TRANS_HALF_TOPIC@CID_RMQ_SYS_TRANS":{0:26\n\t\t}\n\t}\n}'
)


def test_golden_delay_offset_reads_and_writes_back_byte_identical():
    path = os.path.join(GOLDEN_ROOT, "basic", "store", "config", "delayOffset.json")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    data = configfile.loads(text)
    assert data == {"offsetTable": {1: 2, 2: 2, 3: 2}}
    assert configfile.dumps(data) == text


def test_broker_consumer_offsets_parse_with_int_queue_ids():
    data = configfile.loads(BROKER_OFFSETS)
    assert data["offsetTable"]["RMQ_SYS_TRANS_HALF_TOPIC@CID_RMQ_SYS_TRANS"] == {0: 26}


def test_quoted_digit_keys_stay_strings_and_strings_are_not_rewritten():
    data = configfile.loads('{"123":{"v":"{1:2}, 3:4"}, "t":{7:8}}')
    assert data == {"123": {"v": "{1:2}, 3:4"}, "t": {7: 8}}


# Keys are topics, groups and field names; NUL marks a bare integer key internally.
names = st.text(st.characters(blacklist_characters="\x00"), max_size=8)
keys = st.one_of(st.integers(-(2**31), 2**31 - 1), names)
leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=12))
documents = st.recursive(
    leaves, lambda inner: st.dictionaries(keys, inner, max_size=5), max_leaves=20
)


@given(st.dictionaries(keys, documents, max_size=5))
def test_dumps_loads_round_trip(doc):
    assert configfile.loads(configfile.dumps(doc)) == doc


def test_save_keeps_a_backup_and_load_falls_back_to_it(tmp_path):
    path = str(tmp_path / "config" / "x.json")
    configfile.save(path, {"offsetTable": {1: 1}})
    configfile.save(path, {"offsetTable": {1: 2}})
    assert configfile.load(path) == {"offsetTable": {1: 2}}
    assert configfile.load(path + ".bak") == {"offsetTable": {1: 1}}
    with open(path, "w") as fh:
        fh.write('{"offsetTable":{1:')  # torn
    assert configfile.load(path) == {"offsetTable": {1: 1}}
    os.remove(path)
    assert configfile.load(path) == {"offsetTable": {1: 1}}
    os.remove(path + ".bak")
    assert configfile.load(path) is None


def test_unwritable_values_are_refused():
    with pytest.raises(TypeError):
        configfile.dumps({"a": object()})
    with pytest.raises(TypeError):
        configfile.dumps({1.5: 1})
