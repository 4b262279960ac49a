"""Record counters: wrap-around and reboots lose no record and publish none twice (property tests)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events import body_of, body_to_values, counter_step
from gateway.profiles.wim import RECORDS
from gateway.registers import DataType, Field, RecordLayout, RegisterKind

HR = RegisterKind.HOLDING_REGISTER


def layout(slots: int, start_at: int) -> RecordLayout:
    return RecordLayout("count", HR, 0, 4, slots, (Field("no", 0, HR, DataType.U16),), start_at=start_at,
                        number_field="no")


steps = st.lists(st.tuples(st.integers(0, 8), st.booleans()), min_size=1, max_size=60)


@settings(max_examples=300)
@given(st.sampled_from([16, 32]), st.sampled_from([8, 16]), st.sampled_from([0, 1]), st.integers(0, 2**32 - 1),
       steps)
def test_every_record_once_through_wraps_and_reboots(bits: int, slots: int, start_at: int, start: int,
                                                     polls: list[tuple[int, bool]]) -> None:
    """A device writes records (at most ``slots`` between polls) and sometimes reboots (the gateway
    sees it on the uptime field). Every record is handled exactly once, in order; at start the
    gateway re-reads the records the device still holds."""
    modulus = 1 << bits
    lay = layout(slots, start_at)
    count = start % modulus  # the device's counter: records written since boot, wrapping

    def number() -> int:
        return (count - 1 + start_at) % modulus

    boot = 0
    written = [(0, (count - i - 1 + start_at) % modulus) for i in reversed(range(min(count, slots)))]
    handled: list[tuple[int, int]] = []
    last: int | None = None
    for new, reboot in polls:
        if reboot:
            boot, count = boot + 1, 0
            if last is None:  # rebooted before the gateway ever read it: nothing of the old boot is held
                written = []
        for _ in range(new):
            count = (count + 1) % modulus
            written.append((boot, number()))
        ring = {n for b, n in written[-slots:] if b == boot}  # what the device holds now
        if last is None:
            written = [(b, n) for b, n in written if b == boot and n in ring]
        step = counter_step(last, count, lay, modulus, rebooted=reboot and last is not None)
        assert step.lost == 0
        numbers = step.numbers(modulus)
        if last is not None:
            assert set(numbers) <= ring
        handled += [(boot, n) for n in numbers if n in ring]  # the record's own number is checked
        last = count
    assert handled == written


def test_wrap_and_reset_are_told_apart() -> None:
    lay = layout(16, 1)
    m = 1 << 16
    wrap = counter_step(65533, 3, lay, m)
    assert wrap.wrapped and not wrap.reset and wrap.numbers(m) == [65534, 65535, 0, 1, 2, 3]
    reset = counter_step(1200, 3, lay, m)
    assert reset.reset and reset.numbers(m) == [1, 2, 3]
    overrun = counter_step(10, 40, lay, m)
    assert overrun.lost == 14 and overrun.numbers(m) == list(range(25, 41))


def test_wim_body_round_trips_through_the_declared_mapping() -> None:
    body = {"lane": 2, "speed_kmh": 61.5, "axles": 3, "gross_kg": 30120, "axle_kg": [7000.0, 11560.0, 11560.0],
            "spacing_m": [3.6, 1.3]}
    values = body_to_values(RECORDS, 7, 1_764_547_200.25, body)
    full = {f.name: 0.0 for f in RECORDS.fields} | values
    assert body_of(RECORDS, full) == body
