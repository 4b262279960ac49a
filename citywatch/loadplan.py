"""Pure planning for the load generator: which device reports what, when, with which value.

A plan is ``G`` gateways x ``M`` devices, each device a kind (water_gauge / manhole / lamp / wim,
by a weighted mix), its kind's metrics and a reporting interval drawn from the kind's realistic
intervals. The intervals are then scaled by one common factor so the whole district produces the
requested readings/s (the mix of intervals keeps its shape); each interval is a whole number of
ticks, and a device reports at the ticks where ``(tick + phase) % period == 0``, phases spread by
a seeded RNG so the load is flat. A storm raises the depth of a seeded fraction of the water gauges
above the ``road-water-depth`` thresholds of ``configs/rules/default.yaml`` between two offsets.

Everything here takes values and returns values: same arguments and seed, same plan and readings.
The async shell that writes outboxes and talks MQTT is :mod:`citywatch.loadgen`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, field

import orjson

from contracts.errors import CitywatchError
from contracts.reading import DeviceInfo, Reading
from edge_agent.outbox import ROW_OVERHEAD_BYTES

#: grid code of every planned device (a district of Hangzhou, as in the demo)
GRID = "330106001001"
#: depth a storm gauge reports: above minor (0.15) and major (0.25), below critical (0.40)
STORM_DEPTH_M = 0.30
#: the longest run the generator accepts (it must stop by itself)
MAX_DURATION_S = 24 * 3600.0
#: above this the plan's quantised rate is refused rather than silently different from the request
RATE_TOLERANCE = 0.05


class LoadgenError(CitywatchError):
    """A load plan cannot be made as asked, or the generator could not run it."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    unit: str
    base: float
    jitter: float  # peak-to-peak, deterministic pseudo-noise


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: str
    profile: str
    prefix: str  # device id part: ``{gw}-{prefix}{index}``
    major_minor: str  # component id: county(6) + major(2) + minor(2) + serial(6)
    owner: str
    metrics: tuple[MetricSpec, ...]
    intervals_s: tuple[tuple[float, float], ...]  # (interval, weight)


#: Metrics and intervals as the shipped profiles report them (docs/devices.md). Lamps report their
#: supply and dimming, not relay/current, so the sun-dependent lamp rules stay quiet under load;
#: the metrics are inside every default rule's normal range, so only the storm raises alarms. A dry
#: gauge's depth is steady (no jitter): mm of noise over compressed intervals reads as a rise of
#: > 10 cm/h to ``road-water-rising``; the raw radar distance keeps its mm jitter (no flatline).
KINDS: dict[str, KindSpec] = {
    "water_gauge": KindSpec(
        "water_gauge", "water_gauge", "wl", "0103", "drainage",
        (MetricSpec("depth", "m", 0.02, 0.0), MetricSpec("distance", "m", 2.48, 0.004),
         MetricSpec("battery", "V", 3.62, 0.02)),
        ((60.0, 0.7), (300.0, 0.3)),
    ),
    "manhole": KindSpec(
        "manhole", "manhole", "mh", "0103", "drainage",
        (MetricSpec("tilt_x", "deg", 0.4, 0.2), MetricSpec("tilt_y", "deg", -0.3, 0.2),
         MetricSpec("battery", "V", 3.61, 0.02)),
        ((300.0, 0.8), (60.0, 0.2)),
    ),
    "lamp": KindSpec(
        "lamp", "lamp", "lp", "0201", "street-lighting",
        (MetricSpec("voltage", "V", 221.0, 2.0), MetricSpec("power", "W", 88.0, 4.0),
         MetricSpec("dim_level", "%", 80.0, 0.0), MetricSpec("energy", "kWh", 1520.0, 0.0)),
        ((300.0, 0.6), (900.0, 0.4)),
    ),
    "wim": KindSpec(
        "wim", "wim", "wim", "0104", "transport-enforcement",
        (MetricSpec("record_count", "", 120.0, 40.0),),
        ((60.0, 1.0),),
    ),
}

DEFAULT_MIX: dict[str, float] = {"water_gauge": 0.3, "manhole": 0.4, "lamp": 0.25, "wim": 0.05}


@dataclass(frozen=True)
class GatewayPlan:
    """One gateway's devices as parallel tuples (cheap at 1 000 devices x 1 000 gateways)."""

    gw: str
    devices: tuple[str, ...]
    kinds: tuple[str, ...]
    period_ticks: tuple[int, ...]
    storm: frozenset[int]  # indices of the devices the storm floods
    #: period -> slot -> device indices due at ticks with ``tick % period == slot``
    buckets: dict[int, tuple[tuple[int, ...], ...]] = field(repr=False)

    def due(self, tick: int) -> list[int]:
        """Indices of the devices that report at ``tick``."""
        out: list[int] = []
        for period, slots in self.buckets.items():
            out.extend(slots[tick % period])
        return out


@dataclass(frozen=True)
class LoadPlan:
    gateways: tuple[GatewayPlan, ...]
    tick_s: float
    rate_per_s: float  # what the quantised plan really produces (within RATE_TOLERANCE of the request)
    interval_scale: float  # every realistic interval was multiplied by this
    storm_start_s: float
    storm_end_s: float
    seed: int

    @property
    def n_devices(self) -> int:
        return sum(len(g.devices) for g in self.gateways)

    def storm_devices(self) -> list[str]:
        return [g.devices[i] for g in self.gateways for i in sorted(g.storm)]

    def storm_active(self, tick: int) -> bool:
        return self.storm_start_s <= tick * self.tick_s < self.storm_end_s

    def kind_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(KINDS, 0)
        for g in self.gateways:
            for k in g.kinds:
                counts[k] += 1
        return counts


def _split(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``n`` over the mix's weights (exact total, deterministic)."""
    total = sum(mix.values())
    raw = {k: n * w / total for k, w in mix.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[:rest]:
        counts[k] += 1
    return counts


def _check(name: str, value: float, ok: bool, problem: str) -> None:
    if not ok:
        raise LoadgenError(f"{name}={value!r}: {problem}")


def make_plan(
    gateways: list[str],
    devices_per_gateway: int,
    rate_per_s: float,
    *,
    mix: dict[str, float] | None = None,
    storm_fraction: float = 0.0,
    storm_start_s: float = 0.0,
    storm_end_s: float = math.inf,
    tick_s: float | None = None,
    seed: int = 1,
) -> LoadPlan:
    """Plan ``devices_per_gateway`` devices on each gateway producing ``rate_per_s`` readings/s.

    ``tick_s`` None picks the tick: 1 s, or a tenth of the shortest scaled interval if that is
    shorter (so whole-tick periods stay within a few percent of the scaled intervals).
    Refuses (LoadgenError) a rate the tick cannot carry (a device would report more than once a
    tick) or that quantising intervals to ticks would miss by more than ``RATE_TOLERANCE``.
    """
    mix = dict(DEFAULT_MIX if mix is None else mix)
    _check("gateways", len(gateways), len(gateways) > 0 and len(set(gateways)) == len(gateways),
           "need at least one gateway, all names distinct")
    _check("devices_per_gateway", devices_per_gateway, devices_per_gateway >= 1, "must be >= 1")
    _check("rate", rate_per_s, math.isfinite(rate_per_s) and rate_per_s > 0, "must be a positive number")
    if tick_s is not None:
        _check("tick_s", tick_s, math.isfinite(tick_s) and tick_s > 0, "must be a positive number")
    _check("storm_fraction", storm_fraction, 0.0 <= storm_fraction <= 1.0, "must be within [0, 1]")
    for kind, weight in mix.items():
        _check(f"mix.{kind}", weight, kind in KINDS, f"unknown kind (known: {', '.join(KINDS)})")
        _check(f"mix.{kind}", weight, weight >= 0, "weight must be >= 0")
    _check("mix", sum(mix.values()), sum(mix.values()) > 0, "needs a positive weight")
    rng = random.Random(seed)
    counts = _split(devices_per_gateway, {k: w for k, w in mix.items() if w > 0})
    width = max(3, len(str(devices_per_gateway - 1)))
    # realistic intervals first, one list per gateway, then one common scale for the rate
    drafts: list[tuple[str, list[str], list[str], list[float]]] = []
    natural = 0.0
    for gw in gateways:
        ids: list[str] = []
        kinds: list[str] = []
        intervals: list[float] = []
        for kind, n in counts.items():
            spec = KINDS[kind]
            choices = [i for i, _w in spec.intervals_s]
            cum = list(itertools.accumulate(w for _i, w in spec.intervals_s))
            for j in range(n):
                ids.append(f"{gw}-{spec.prefix}{j:0{width}d}")
                kinds.append(kind)
                interval = choices[min(bisect.bisect(cum, rng.random() * cum[-1]), len(choices) - 1)]
                intervals.append(interval)
                natural += len(spec.metrics) / interval
        drafts.append((gw, ids, kinds, intervals))
    scale = natural / rate_per_s
    if tick_s is None:
        shortest = min(min(d[3]) for d in drafts)
        tick_s = min(1.0, shortest * scale / 10.0)
    gauges = [(gi, i) for gi, d in enumerate(drafts) for i, k in enumerate(d[2]) if k == "water_gauge"]
    storm = set(rng.sample(gauges, round(storm_fraction * len(gauges))))
    plans: list[GatewayPlan] = []
    planned = 0.0
    for gi, (gw, ids, kinds, intervals) in enumerate(drafts):
        periods: list[int] = []
        buckets: dict[int, list[list[int]]] = {}
        for i, interval in enumerate(intervals):
            exact = interval * scale / tick_s
            if exact < 0.5:
                raise LoadgenError(
                    f"rate={rate_per_s!r}: {len(gateways) * devices_per_gateway} devices would have to report "
                    f"every {interval * scale:.3g} s, more often than once a tick ({tick_s} s); "
                    "add devices or lower the rate"
                )
            period = max(1, round(exact))
            periods.append(period)
            slots = buckets.get(period)
            if slots is None:
                slots = buckets[period] = [[] for _ in range(period)]
            slots[rng.randrange(period)].append(i)
            planned += len(KINDS[kinds[i]].metrics) / (period * tick_s)
        plans.append(GatewayPlan(
            gw, tuple(ids), tuple(kinds), tuple(periods), frozenset(i for g, i in storm if g == gi),
            {p: tuple(tuple(s) for s in slots) for p, slots in sorted(buckets.items())},
        ))
    if abs(planned - rate_per_s) > RATE_TOLERANCE * rate_per_s:
        raise LoadgenError(
            f"rate={rate_per_s!r}: with whole-tick intervals (tick {tick_s} s) the plan gives "
            f"{planned:.1f} readings/s; use a smaller tick or a rate that fits"
        )
    return LoadPlan(tuple(plans), tick_s, planned, scale, storm_start_s, storm_end_s, seed)


def _noise(index: int, tick: int, m: int) -> float:
    """Deterministic pseudo-noise in [-0.5, 0.5) (no RNG state: any tick can be computed alone)."""
    return ((index * 7919 + tick * 104729 + m * 1299709) % 1000) / 1000.0 - 0.5


@dataclass(frozen=True, slots=True)
class _MetricRow:
    """One metric of a kind, pre-rendered: the per-reading work left is a table lookup."""

    name: str
    unit: str
    size: int  # budget bytes of the reading minus len(device) (edge_agent.outbox.reading_nbytes)
    key: int  # the metric's term of the noise hash
    values: tuple[float, ...]  # value for each of the 1 000 noise steps, rounded as sent
    storm_values: tuple[float, ...] | None  # the same for a flooded gauge (depth only)


def _rows(spec: KindSpec) -> tuple[_MetricRow, ...]:
    """Every value a metric can take is one of 1 000 (the noise has 1 000 steps): tabulate them once."""
    out = []
    for m, ms in enumerate(spec.metrics):
        steps = [k / 1000.0 - 0.5 for k in range(1000)]  # exactly _noise's value for hash % 1000 == k
        values = tuple(round(ms.base + ms.jitter * n, 4) for n in steps)
        storm = tuple(round(STORM_DEPTH_M + 0.01 * n, 4) for n in steps) if ms.name == "depth" else None
        out.append(_MetricRow(ms.name, ms.unit, len(ms.name) + len(ms.unit) + ROW_OVERHEAD_BYTES, m * 1299709,
                              values, storm))
    return tuple(out)


_ROWS: dict[str, tuple[_MetricRow, ...]] = {k: _rows(spec) for k, spec in KINDS.items()}


#: one device's readings of one tick, encoded: (readings, outbox budget bytes, SenML records).
#: The records start with the device's ``bn``/``bt`` record, so chunks joined by commas are the
#: ``e`` array :func:`contracts.payloads.encode_telemetry` makes for the same readings.
Chunk = tuple[int, int, bytes]


@dataclass(frozen=True, slots=True)
class _KindWire:
    """A kind's SenML records after the device's ``bn``/``bt``, for each of the 1 000 noise hashes.

    Metric ``m``'s value depends on ``(h + m * 1299709) % 1000`` with ``h`` the device-and-tick part of
    the hash, so the whole run of records depends only on ``h % 1000``: 1 000 byte strings per kind
    (and 1 000 for a flooded gauge) hold every record run the kind can send.
    """

    bodies: tuple[bytes, ...]
    storm_bodies: tuple[bytes, ...]
    n: int  # readings per device sample
    size: int  # their outbox budget bytes, minus len(device) per reading


def _wire(rows: tuple[_MetricRow, ...]) -> _KindWire:
    pieces = []
    for m, row in enumerate(rows):
        # encode_telemetry: the first record of a device run has bn/bt, the next ones "t" (0.0: same ts)
        lead = b',"n":' if m == 0 else b'},{"t":0.0,"n":'
        unit = b',"u":' + orjson.dumps(row.unit) if row.unit else b""
        pieces.append(lead + orjson.dumps(row.name) + unit + b',"v":')

    def body(h: int, storm: bool) -> bytes:
        parts = []
        for piece, row in zip(pieces, rows, strict=True):
            table = row.storm_values if storm and row.storm_values is not None else row.values
            parts += [piece, orjson.dumps(table[(h + row.key) % 1000])]
        return b"".join(parts) + b"}"

    return _KindWire(tuple(body(h, False) for h in range(1000)), tuple(body(h, True) for h in range(1000)),
                     len(rows), sum(row.size for row in rows))


_WIRE: dict[str, _KindWire] = {k: _wire(rows) for k, rows in _ROWS.items()}


def chunks_at(plan: LoadPlan, gp: GatewayPlan, tick: int, ts: float) -> tuple[list[Chunk], int]:
    """:func:`readings_at` already encoded, one :data:`Chunk` per due device, and the number of readings.

    The generator's hot path: no ``Reading`` objects, no per-record dicts; per device one table
    lookup and one format. Same values, same order, same bytes as encoding :func:`readings_at`.
    """
    storm = gp.storm if plan.storm_active(tick) else frozenset()
    tk = tick * 104729
    ts_b = orjson.dumps(ts)
    out: list[Chunk] = []
    add = out.append
    kinds, devices = gp.kinds, gp.devices
    total = 0
    dumps = orjson.dumps
    for i in gp.due(tick):
        dev = devices[i]
        w = _WIRE[kinds[i]]
        body = (w.storm_bodies if i in storm else w.bodies)[(i * 7919 + tk) % 1000]
        add((w.n, w.n * len(dev) + w.size, b'{"bn":%b,"bt":%b%b' % (dumps(dev + "/"), ts_b, body)))
        total += w.n
    return out, total


def readings_at(plan: LoadPlan, gp: GatewayPlan, tick: int, ts: float) -> list[Reading]:
    """The readings of ``gp``'s devices due at ``tick``, stamped with sample time ``ts``.

    Value of metric ``m`` of device ``i``: ``base + jitter * _noise(i, tick, m)`` rounded to 4 places
    (a flooded gauge's depth: ``STORM_DEPTH_M + 0.01 * _noise``), looked up by the noise hash in
    the kind's table. The generator sends :func:`chunks_at`, the same readings pre-encoded.
    """
    storm = gp.storm if plan.storm_active(tick) else frozenset()
    tk = tick * 104729
    out: list[Reading] = []
    for i in gp.due(tick):
        dev = gp.devices[i]
        h = i * 7919 + tk
        flooded = i in storm
        for row in _ROWS[gp.kinds[i]]:
            table = row.storm_values if flooded and row.storm_values is not None else row.values
            out.append(Reading(dev, row.name, ts, table[(h + row.key) % 1000], row.unit))
    return out


def device_infos(plan: LoadPlan, gp: GatewayPlan, gw_index: int = 0) -> list[DeviceInfo]:
    """The birth message's device list: kind, place, 部件 id, owner and the planned interval."""
    out: list[DeviceInfo] = []
    for i, dev in enumerate(gp.devices):
        spec = KINDS[gp.kinds[i]]
        serial = (gw_index * len(gp.devices) + i) % 1_000_000
        out.append(DeviceInfo(
            dev, spec.profile, spec.kind,
            lat=round(30.20 + (gw_index % 100) * 0.002 + (i % 50) * 0.00003, 6),
            lon=round(120.10 + (gw_index // 100) * 0.002 + (i // 50) * 0.00003, 6),
            grid=GRID, component_id=f"330106{spec.major_minor}{serial:06d}", owner=spec.owner,
            interval_s=gp.period_ticks[i] * plan.tick_s,
        ))
    return out
