"""What the W2 peers share: wattflow's view schema and partition buckets, the topic's size, and
the summary lines `wattflow live` prints (which the harness parses)."""

import argparse
import os
import sys
import time

from cassandra.cluster import Cluster
from confluent_kafka import Consumer, TopicPartition

from schema import MEASURES

GRANULARITIES = [("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)]
DAY_MS = 86_400_000
# Upsert columns, in table order after the key.
COLUMNS = ["meter", "bucket", "window_start", "samples", "covered_seconds"]
for _m in MEASURES:
    COLUMNS += [f"{_m}_sum", f"{_m}_min", f"{_m}_max", f"{_m}_avg"]
COLUMNS += ["active_energy_wh", "unmetered_wh", "power_factor_avg"]


def cassandra_session(contact):
    host, port = contact.rsplit(":", 1)
    return Cluster([host], port=int(port)).connect()


def create_views(session, keyspace):
    """The views' schema (`table_cql` in src/sink/cassandra.rs), if wattflow did not make it."""
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    doubles = ", ".join(f"{c} double" for c in COLUMNS[5:])
    for g, _ in GRANULARITIES:
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {keyspace}.{g}_view (meter text, bucket int, "
            f"window_start timestamp, samples bigint, covered_seconds bigint, {doubles}, "
            "PRIMARY KEY ((meter, bucket), window_start))"
        )


def civil_from_days(z):
    """(year, month, day) of a day number since 1970-01-01 (Howard Hinnant's algorithm)."""
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def bucket_of(granularity, start_ms):
    """The partition bucket of wattflow's views (see `bucket_of` in src/sink/cassandra.rs)."""
    day = start_ms // DAY_MS
    if granularity == "minute":
        return day
    y, m, _ = civil_from_days(day)
    return y * 100 + m if granularity == "hour" else y


def arguments(description):
    """The options every W2 peer takes from the harness; a script adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--cassandra", required=True)
    p.add_argument("--keyspace", required=True)
    p.add_argument("--exit-when-idle", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ready-file")
    return p


_size_asked = [float("-inf"), 0]


def all_counted(counted, brokers, topic):
    """Whether `counted` readings are every message of `topic`, asking Kafka at most every 2 s."""
    now = time.monotonic()
    if now - _size_asked[0] >= 2.0:
        _size_asked[:] = [now, topic_size(brokers, topic)]
    return counted >= _size_asked[1]


def topic_size(brokers, topic):
    """Messages in `topic` now (sum over its partitions of high - low watermark). In W2 every
    message is one valid reading, so a peer that has counted this many is done."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "wattflow-w2-size"})
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        c.close()


def print_summary(word, readings, rows, last_read, last_write):
    """`wattflow live`'s summary lines, then exit at once (the engines' threads are not joined)."""
    print(f"live {word}: {readings} readings, {rows} rows written, 0 changes merged")
    print(f"last message read {last_read or 0.0:.3f} s after start")
    print(f"last row written {last_write or 0.0:.3f} s after start")
    sys.stdout.flush()
    os._exit(0)
