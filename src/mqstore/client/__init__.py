"""RocketMQ's client model in-process: producers and consumers over a MessageStore."""

from ..transaction import LocalTransactionState
from .consumer import (
    BROADCASTING,
    CLUSTERING,
    CONSUME_SUCCESS,
    RECONSUME_LATER,
    ConsumeConcurrentlyStatus,
    ConsumeContext,
    ConsumeFromWhere,
    ConsumeOrderlyStatus,
    MessageModel,
    PullConsumer,
    PushConsumer,
)
from .filter import MessageSelector
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
    "BROADCASTING",
    "CLUSTERING",
    "CONSUME_SUCCESS",
    "RECONSUME_LATER",
    "ConsumeConcurrentlyStatus",
    "ConsumeContext",
    "ConsumeFromWhere",
    "ConsumeOrderlyStatus",
    "MessageModel",
    "MessageSelector",
    "PullConsumer",
    "PushConsumer",
    "LocalTransactionState",
    "MessageQueue",
    "Producer",
    "SendResult",
    "SendStatus",
    "TransactionProducer",
    "TransactionSendResult",
    "sharding_hash",
]
