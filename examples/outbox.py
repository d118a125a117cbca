"""An outbox with transactions: an order is saved in SQLite and its "order created"
event is published if, and only if, the database transaction commits.

    python examples/outbox.py

The event is stored first as a half message (invisible to consumers); the local
transaction runs; then the event is committed or rolled back. If the process dies in
between, the store's check pass asks `check` (here: is the order in the database?) and
settles the event the same way, as RocketMQ does.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile

from mqstore import (
    ConsumeFromWhere,
    LocalTransactionState,
    Message,
    MessageStore,
    PullConsumer,
    TransactionProducer,
)


def main() -> None:
    root = tempfile.mkdtemp()
    db = sqlite3.connect(os.path.join(root, "orders.db"), check_same_thread=False)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER NOT NULL)")
    store = MessageStore(os.path.join(root, "store"), mapped_file_size_commitlog=1 << 20,
                         mapped_file_size_consume_queue=20 * 1024,
                         max_hash_slot_num=512, max_index_num=2048)

    def save_order(msg: Message, order: dict) -> LocalTransactionState:
        try:
            with db:  # one SQLite transaction
                if order["total"] <= 0:
                    raise ValueError("an order must cost something")
                db.execute("INSERT INTO orders VALUES (?, ?)", (order["id"], order["total"]))
        except (ValueError, sqlite3.Error):
            return LocalTransactionState.ROLLBACK_MESSAGE
        return LocalTransactionState.COMMIT_MESSAGE

    def check(msg) -> LocalTransactionState:
        order_id = json.loads(msg.body)["id"]
        row = db.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row:
            return LocalTransactionState.COMMIT_MESSAGE
        return LocalTransactionState.ROLLBACK_MESSAGE

    producer = TransactionProducer(store, "order_service", check=check)
    for order in ({"id": 1, "total": 250}, {"id": 2, "total": 0}, {"id": 3, "total": 99}):
        event = Message("order-events", json.dumps(order).encode(), tags="created",
                        keys=f"order-{order['id']}")
        result = producer.send_in_transaction(event, execute=save_order, arg=order)
        print(f"order {order['id']}: {result.local_transaction_state.name}")

    reader = PullConsumer(store, "audit", consume_from_where=ConsumeFromWhere.FIRST_OFFSET)
    reader.subscribe("order-events")
    published = []
    while True:
        batch = reader.poll(timeout=0.5)
        if not batch:
            break
        published += [json.loads(m.body)["id"] for m in batch]
    saved = [row[0] for row in db.execute("SELECT id FROM orders ORDER BY id")]
    print("saved orders:", saved, "published events:", sorted(published))
    assert saved == sorted(published) == [1, 3]
    reader.shutdown()
    producer.shutdown()
    store.close()


if __name__ == "__main__":
    main()
