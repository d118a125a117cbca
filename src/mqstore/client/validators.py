"""RocketMQ's client-side checks (Validators): groups, topics, bodies, properties."""

from __future__ import annotations

from ..errors import MQClientError
from ..topics import NOT_ALLOWED_SEND_TOPICS, TOPIC_PATTERN, topic_error

MAX_GROUP_LENGTH = 255
DEFAULT_PRODUCER_GROUP = "DEFAULT_PRODUCER"
DEFAULT_CONSUMER_GROUP = "DEFAULT_CONSUMER"

#: Property names the system owns (MessageConst.STRING_HASH_SET, 4.9.8).
SYSTEM_PROPERTIES = frozenset(
    {
        "TRACE_ON", "MSG_REGION", "KEYS", "TAGS", "WAIT", "DELAY", "RETRY_TOPIC",
        "REAL_TOPIC", "REAL_QID", "TRAN_MSG", "PGROUP", "MIN_OFFSET", "MAX_OFFSET",
        "BUYER_ID", "ORIGIN_MESSAGE_ID", "TRANSFER_FLAG", "CORRECTION_FLAG", "MQ2_FLAG",
        "RECONSUME_TIME", "UNIQ_KEY", "MAX_RECONSUME_TIMES", "CONSUME_START_TIME",
        "TRAN_PREPARED_QUEUE_OFFSET", "TRANSACTION_CHECK_TIMES",
        "CHECK_IMMUNITY_TIME_IN_SECONDS", "INSTANCE_ID", "CORRELATION_ID",
        "REPLY_TO_CLIENT", "TTL", "ARRIVE_TIME", "PUSH_REPLY_TIME", "CLUSTER", "MSG_TYPE",
        "INNER_MULTI_DISPATCH", "INNER_MULTI_QUEUE_OFFSET", "__SHARDINGKEY",
    }
)
#: System properties a producer's message may carry: set through Message's own
#: fields (tags, keys, delay_level), or kept from an earlier send (UNIQ_KEY).
SETTABLE_PROPERTIES = frozenset(
    {"KEYS", "TAGS", "WAIT", "DELAY", "UNIQ_KEY", "CHECK_IMMUNITY_TIME_IN_SECONDS"}
)
FORBIDDEN_PROPERTIES = SYSTEM_PROPERTIES - SETTABLE_PROPERTIES


def check_group(group, kind: str = "producer") -> str:
    """A legal group name, or MQClientError saying why not."""
    if not isinstance(group, str):
        raise TypeError(f"{kind} group must be a str, got {type(group).__name__}")
    if not group.strip():
        raise MQClientError(f"{kind} group is blank")
    if len(group) > MAX_GROUP_LENGTH:
        raise MQClientError(f"{kind} group is longer than {MAX_GROUP_LENGTH} characters")
    if not TOPIC_PATTERN.fullmatch(group):
        raise MQClientError(f"{kind} group {group!r} has characters outside [%|a-zA-Z0-9_-]")
    default = DEFAULT_PRODUCER_GROUP if kind == "producer" else DEFAULT_CONSUMER_GROUP
    if group == default:
        raise MQClientError(f"{kind} group cannot be {default}; name your group")
    return group


def check_send_topic(topic) -> None:
    """MQClientError when a producer may not send to `topic`."""
    error = topic_error(topic)
    if error:
        if not isinstance(topic, str):
            raise TypeError(error)
        raise MQClientError(error)
    if topic in NOT_ALLOWED_SEND_TOPICS:
        raise MQClientError(f"topic {topic} is a system topic; producers may not send to it")


def check_properties(properties) -> None:
    """MQClientError for a system property a producer may not set."""
    for name in properties:
        if name in FORBIDDEN_PROPERTIES:
            raise MQClientError(
                f"property {name!r} is reserved for the system; use another name"
            )
