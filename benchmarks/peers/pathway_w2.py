"""W2 peer: Pathway reads the live topic, aggregates minute, hour and day windows per meter, and
upserts the same Cassandra views as `wattflow live` (same tables, same keys).

The windows are group-bys on the window start (Pathway's `windowby` does the same through extra
tables, at about twice the CPU). Pathway has no Cassandra output connector, so the windows'
changes go through `pw.io.subscribe` and the DataStax Python driver, with the write policy of
wattflow's sink: minute rows at every Pathway commit, hour rows at most every 10 s and day rows
every 60 s (changes meanwhile merged, latest value wins), everything held when the input ends;
up to --concurrency requests in flight.

Prints the same summary lines as `wattflow live`, which the harness parses:
    live finished: N readings, R rows written, 0 changes merged
    last message read X s after start     (here: the last window change seen at the output)
    last row written Y s after start
and exits once nothing changed for --exit-when-idle seconds and it has counted every message of
the topic (W2 topics hold valid readings only), or on
SIGTERM (the harness's deadline), printing what it did so far. `--ready-file` is created 3 s
after the engine starts (Pathway does not say when its Kafka reader is up).

Usage: pathway_w2.py --brokers H:P --topic T --group G --cassandra H:P --keyspace K
                     [--exit-when-idle S] [--threads N] [--concurrency C] [--ready-file PATH]
Environment: PATHWAY_THREADS (engine threads), W2_AUTOCOMMIT_MS (Kafka commit period, 100).
"""

import gc
import os
import signal
import sys
import threading
import time

import pathway as pw
from cassandra.concurrent import execute_concurrent_with_args

from w2_common import (
    COLUMNS,
    GRANULARITIES,
    MEASURES,
    all_counted,
    arguments,
    bucket_of,
    cassandra_session,
    create_views,
    print_summary,
)


class Reading(pw.Schema):
    meter: str
    ts: int
    interval_s: int
    global_active_power: float
    global_reactive_power: float
    voltage: float
    global_intensity: float
    sub_metering_1: float
    sub_metering_2: float
    sub_metering_3: float


def main():
    p = arguments("W2 peer: Pathway into wattflow's Cassandra views")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--no-write", action="store_true", help="diagnostics: write nothing")
    a = p.parse_args()

    started = time.monotonic()
    session = cassandra_session(a.cassandra)
    create_views(session, a.keyspace)
    marks = ", ".join("?" for _ in COLUMNS)
    statements = {
        g: session.prepare(
            f"INSERT INTO {a.keyspace}.{g}_view ({', '.join(COLUMNS)}) VALUES ({marks})"
        )
        for g, _ in GRANULARITIES
    }

    t = pw.io.kafka.read(
        rdkafka_settings={
            "bootstrap.servers": a.brokers,
            "group.id": a.group,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": "false",
        },
        topic=a.topic,
        format="json",
        schema=Reading,
        autocommit_duration_ms=int(os.environ.get("W2_AUTOCOMMIT_MS", "100")),
    )
    # Per reading: its active energy (Wh), what the sub-meters did not cover, its power factor.
    t = t.with_columns(
        energy=pw.this.global_active_power * pw.this.interval_s / 3.6,
    )
    t = t.with_columns(
        unmetered=pw.this.energy
        - pw.this.sub_metering_1
        - pw.this.sub_metering_2
        - pw.this.sub_metering_3,
        apparent=(pw.this.global_active_power**2 + pw.this.global_reactive_power**2) ** 0.5,
    )
    t = t.with_columns(
        pf=pw.if_else(pw.this.apparent > 0, pw.this.global_active_power / pw.this.apparent, 0.0),
        has_pf=pw.if_else(pw.this.apparent > 0, 1, 0),
    )

    lock = threading.Lock()
    # Readings counted = the sum of the minute rows' samples (one row per minute and meter).
    state = {"last_change": None, "last_write": None, "rows": 0, "readings": 0}
    minute_samples = {}

    def reducers():
        r = {
            "meter": pw.this.meter,
            "window_start": pw.this.window_start,
            "samples": pw.reducers.count(),
            "covered": pw.reducers.sum(pw.this.interval_s),
            "energy": pw.reducers.sum(pw.this.energy),
            "unmetered": pw.reducers.sum(pw.this.unmetered),
            "pf_sum": pw.reducers.sum(pw.this.pf),
            "pf_n": pw.reducers.sum(pw.this.has_pf),
        }
        for m in MEASURES:
            r[f"{m}_sum"] = pw.reducers.sum(pw.this[m])
            r[f"{m}_min"] = pw.reducers.min(pw.this[m])
            r[f"{m}_max"] = pw.reducers.max(pw.this[m])
        return r

    # Like wattflow's sink: minute rows are written at every Pathway commit, an hour row at most
    # every 10 s and a day row every 60 s (their changes meanwhile merged, latest value wins),
    # and everything still held when the input ends.
    delays = {"minute": 0.0, "hour": 10.0, "day": 60.0}
    writers = []

    def writer(granularity):
        pending = {}
        held = {}
        flushed = [time.monotonic()]
        held_lock = threading.Lock()

        def on_change(key, row, time, is_addition):
            if is_addition:
                pending[(row["meter"], row["window_start"])] = row

        def flush(force):
            with held_lock:
                if not held or (
                    not force and time.monotonic() - flushed[0] < delays[granularity]
                ):
                    return
                rows = list(held.values())
                held.clear()
                flushed[0] = time.monotonic()
            params = []
            for row in rows:
                n = row["samples"]
                start = row["window_start"]
                values = [row["meter"], bucket_of(granularity, start), start, n, row["covered"]]
                for m in MEASURES:
                    s = row[f"{m}_sum"]
                    values += [s, row[f"{m}_min"], row[f"{m}_max"], s / n]
                pf = row["pf_sum"] / row["pf_n"] if row["pf_n"] else None
                values += [row["energy"], row["unmetered"], pf]
                params.append(values)
            if not a.no_write:
                for ok, result in execute_concurrent_with_args(
                    session, statements[granularity], params, concurrency=a.concurrency
                ):
                    if not ok:
                        raise RuntimeError(f"upsert failed: {result}")
            with lock:
                state["rows"] += len(params)
                state["last_write"] = time_now()

        def on_time_end(time):
            if pending:
                with lock:
                    if granularity == "minute":
                        for key, row in pending.items():
                            n = row["samples"]
                            state["readings"] += n - minute_samples.get(key, 0)
                            minute_samples[key] = n
                    state["last_change"] = time_now()
                with held_lock:
                    held.update(pending)
                pending.clear()
            flush(False)

        writers.append(flush)
        return on_change, on_time_end

    def time_now():
        return time.monotonic() - started

    # Tumbling windows as a plain group-by on the window start: Pathway's `windowby` does the
    # same, but through extra tables (about twice the CPU here).
    for granularity, duration in GRANULARITIES:
        keyed = t.with_columns(window_start=pw.this.ts - pw.this.ts % duration)
        w = keyed.groupby(keyed.meter, keyed.window_start).reduce(**reducers())
        on_change, on_time_end = writer(granularity)
        pw.io.subscribe(w, on_change=on_change, on_time_end=on_time_end)

    def summary(word):
        with lock:
            print_summary(
                word,
                state["readings"],
                state["rows"],
                state["last_change"],
                state["last_write"],
            )

    # The engine runs in a thread of its own so that the main thread can take SIGTERM (the
    # harness's deadline) and watch for idleness.
    signal.signal(signal.SIGTERM, lambda *_: summary("stopped"))

    def engine():
        try:
            pw.run(monitoring_level=pw.MonitoringLevel.NONE)
        except BaseException as e:  # noqa: BLE001 - reported, then the process ends
            print(f"pathway failed: {e!r}", file=sys.stderr)
            os._exit(1)

    # The subscribe callbacks make many short-lived objects, and CPython's cyclic GC walking
    # the long-lived ones took 13 % of the CPU in a profile: leave the set-up's objects out of it
    # and collect less often.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    threading.Thread(target=engine, daemon=True).start()
    # Pathway does not say when its Kafka reader is up: ready 3 s after the engine started
    # (the harness gives `wattflow live` the same 3 s).
    ready_at = time_now() + 3.0
    while True:
        time.sleep(0.2)
        if a.ready_file and time_now() >= ready_at:
            open(a.ready_file, "w").close()
            a.ready_file = None
        with lock:
            last = state["last_change"]
            counted = state["readings"]
        # Done when quiet for a while and every message of the topic is counted (a long engine
        # step is quiet too).
        if (
            last is not None
            and time_now() - last >= a.exit_when_idle
            and all_counted(counted, a.brokers, a.topic)
        ):
            for flush in writers:
                flush(True)
            summary("finished")


if __name__ == "__main__":
    main()
