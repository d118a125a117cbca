"""RocketMQ's client model in-process: producers (and, soon, consumers) over a
MessageStore."""

from ..transaction import LocalTransactionState
from .producer import (
    MessageQueue,
    Producer,
    SendResult,
    SendStatus,
    TransactionProducer,
    TransactionSendResult,
    sharding_hash,
)

__all__ = [
    "LocalTransactionState",
    "MessageQueue",
    "Producer",
    "SendResult",
    "SendStatus",
    "TransactionProducer",
    "TransactionSendResult",
    "sharding_hash",
]
