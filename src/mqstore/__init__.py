"""mqstore: an embeddable message store for Python, byte-compatible on disk with
Apache RocketMQ's broker store."""

from .client import (  # noqa: E402  (client modules import the store)
    BROADCASTING,
    CLUSTERING,
    CONSUME_SUCCESS,
    RECONSUME_LATER,
    ConsumeFromWhere,
    ConsumeOrderlyStatus,
    LocalTransactionState,
    MessageModel,
    MessageQueue,
    MessageSelector,
    Producer,
    PullConsumer,
    PushConsumer,
    SendResult,
    SendStatus,
    TransactionProducer,
)
from .codec import body_crc, java_hash
from .config import ASYNC_FLUSH, SYNC_FLUSH, StoreConfig
from .errors import (
    DiskFullError,
    MQStoreError,
    RecordError,
    StoreClosedError,
    StoreCorruptedError,
    StoreLockedError,
)
from .message import Message, MessageExt, decode_msg_id, offset_msg_id
from .results import PutBatchResult, PutResult, PutStatus
from .store import MessageStore

__version__ = "0.1.0"

__all__ = [
    "BROADCASTING",
    "CLUSTERING",
    "CONSUME_SUCCESS",
    "RECONSUME_LATER",
    "ConsumeFromWhere",
    "ConsumeOrderlyStatus",
    "LocalTransactionState",
    "MessageModel",
    "MessageQueue",
    "MessageSelector",
    "Producer",
    "PullConsumer",
    "PushConsumer",
    "SendResult",
    "SendStatus",
    "TransactionProducer",
    "ASYNC_FLUSH",
    "SYNC_FLUSH",
    "DiskFullError",
    "MQStoreError",
    "Message",
    "MessageExt",
    "MessageStore",
    "PutBatchResult",
    "PutResult",
    "PutStatus",
    "RecordError",
    "StoreClosedError",
    "StoreConfig",
    "StoreCorruptedError",
    "StoreLockedError",
    "body_crc",
    "decode_msg_id",
    "java_hash",
    "offset_msg_id",
]
