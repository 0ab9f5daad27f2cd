"""`new_message` events on the wire: the body bytes, the AMQP properties, the queue declaration.

The notifier reads exactly these bytes from a queue it declares exactly so. A send writes its
event to the outbox; the relay (relay.py) publishes it in this format.
"""

import json
from collections.abc import Sequence
from datetime import datetime

import aiormq
from aio_pika.abc import AbstractChannel

EVENT_TYPE = "new_message"


def event_body(channel_id: int, user_id: int, index: int, participant_ids: Sequence[int]) -> bytes:
    """The exact bytes the notifier expects: compact JSON, keys in this order, all numbers."""
    payload = {
        "type": EVENT_TYPE,
        "channel_id": channel_id,
        "user_id": user_id,
        "index": index,
        "participant_ids": list(participant_ids),
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def event_properties(outbox_id: int, created_at: datetime) -> aiormq.spec.Basic.Properties:
    """The AMQP properties: the consumer dispatches on `type`; the others are extras."""
    return aiormq.spec.Basic.Properties(
        message_type=EVENT_TYPE,
        content_type="application/json",
        delivery_mode=2,  # persistent
        message_id=str(outbox_id),
        timestamp=created_at,
    )


async def declare_queue(channel: AbstractChannel, name: str) -> None:
    """Declare the queue exactly as the consumer does; any other flags fail with
    PRECONDITION_FAILED on one side or the other."""
    await channel.declare_queue(name, durable=True, exclusive=False, auto_delete=False)
