"""The first-come-first-served gate in front of the request pool."""

import asyncio

import pytest

from messenger.gate import Gate


async def test_waiters_enter_in_arrival_order_even_when_others_arrive_as_a_slot_frees() -> None:
    gate = Gate(1)
    await gate.enter()
    order: list[str] = []

    async def holder(name: str) -> None:
        await gate.enter()
        order.append(name)
        await asyncio.sleep(0)
        gate.leave()

    waiters = [asyncio.create_task(holder(f"waiter {i}")) for i in range(3)]
    await asyncio.sleep(0)  # all three are in line
    gate.leave()
    # Arrives after the slot was freed but before the first waiter ran: must not overtake.
    late = asyncio.create_task(holder("late"))
    await asyncio.gather(*waiters, late)
    assert order == ["waiter 0", "waiter 1", "waiter 2", "late"]
    assert gate.in_use == 0


async def test_a_waiter_that_gives_up_leaves_the_line_and_no_slot_is_lost() -> None:
    gate = Gate(1)
    await gate.enter()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await gate.enter()
    assert gate.waiting == 0
    gate.leave()
    assert gate.in_use == 0
    await gate.enter()  # the slot is free again, taken at once
    assert gate.in_use == 1


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_goes_to_the_next() -> None:
    gate = Gate(1)
    await gate.enter()
    first = asyncio.create_task(gate.enter())
    second = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    gate.leave()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(second, timeout=1)
    assert first.cancelled()
    assert gate.in_use == 1
    assert gate.waiting == 0
