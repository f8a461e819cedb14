"""W2 peer: Spark Structured Streaming (the original project's engine) reads the live topic,
aggregates minute, hour and day windows per meter, and upserts the same Cassandra views as
`wattflow live` (same tables, same keys) through the DataStax Spark Cassandra Connector.

One streaming query: each reading is expanded into its three windows, grouped by (granularity,
meter, window start) with a 60 s event-time watermark, in `update` output mode; every
micro-batch (triggered as soon as the previous one ends, at most 200,000 messages while catching
up: `maxOffsetsPerTrigger`) writes the windows it changed.
The Kafka and Cassandra connectors come from Maven Central (`spark.jars.packages`, cached by
Ivy under ~/.ivy2 after the first run).

Prints the same summary lines as `wattflow live`, which the harness parses:
    live finished: N readings, R rows written, 0 changes merged
    last message read X s after start     (the end of the last micro-batch that read input)
    last row written Y s after start
and exits once nothing was read for --exit-when-idle seconds and it has read every message of
the topic (W2 topics hold valid readings only), or on
SIGTERM (the harness's deadline), printing what it did so far.

Usage: spark_w2.py --brokers H:P --topic T --group G --cassandra H:P --keyspace K
                   [--exit-when-idle S] [--threads N] [--ready-file PATH]
"""

import shutil
import signal
import sys
import tempfile
import threading
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from w2_common import (
    MEASURES,
    all_counted,
    arguments,
    cassandra_session,
    create_views,
    print_summary,
)

PACKAGES = ",".join(
    [
        "org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.7",
        "com.datastax.spark:spark-cassandra-connector_2.12:3.5.1",
    ]
)


def main():
    a = arguments("W2 peer: Spark Structured Streaming into wattflow's Cassandra views").parse_args()

    started = time.monotonic()
    host, port = a.cassandra.rsplit(":", 1)
    session = cassandra_session(a.cassandra)
    create_views(session, a.keyspace)
    session.shutdown()

    spark = (
        SparkSession.builder.master(f"local[{a.threads}]")
        .appName("wattflow-w2-peer")
        .config("spark.jars.packages", PACKAGES)
        .config("spark.sql.shuffle.partitions", str(max(2, a.threads * 2)))
        .config("spark.cassandra.connection.host", host)
        .config("spark.cassandra.connection.port", port)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    # UTC, so that the calendar buckets match wattflow's (UCI naive time written as UTC).
    spark.conf.set("spark.sql.session.timeZone", "UTC")

    schema = T.StructType(
        [
            T.StructField("meter", T.StringType()),
            T.StructField("ts", T.LongType()),
            T.StructField("interval_s", T.LongType()),
        ]
        + [T.StructField(m, T.DoubleType()) for m in MEASURES]
    )
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", a.brokers)
        .option("subscribe", a.topic)
        .option("startingOffsets", "earliest")
        .option("kafka.group.id", a.group)
        # Bounded micro-batches while catching up (Spark's usual advice for a backlog).
        .option("maxOffsetsPerTrigger", "200000")
        .load()
    )
    r = raw.select(F.from_json(F.col("value").cast("string"), schema).alias("r")).select("r.*")
    r = r.where(F.col("meter").isNotNull() & F.col("ts").isNotNull())
    apparent = F.sqrt(F.col("global_active_power") ** 2 + F.col("global_reactive_power") ** 2)
    r = (
        r.withColumn("event_time", (F.col("ts") / 1000).cast("timestamp"))
        .withColumn("energy", F.col("global_active_power") * F.col("interval_s") / 3.6)
        .withColumn(
            "unmetered",
            F.col("energy")
            - F.col("sub_metering_1")
            - F.col("sub_metering_2")
            - F.col("sub_metering_3"),
        )
        .withColumn("pf", F.when(apparent > 0, F.col("global_active_power") / apparent))
    )
    # Each reading into its three windows: (granularity, window start in ms).
    r = r.withColumn(
        "w",
        F.explode(
            F.array(
                *[
                    F.struct(F.lit(g).alias("g"), (F.col("ts") - F.col("ts") % d).alias("start"))
                    for g, d in (("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000))
                ]
            )
        ),
    )
    aggs = [
        F.count(F.lit(1)).alias("samples"),
        F.sum("interval_s").alias("covered_seconds"),
        F.sum("energy").alias("active_energy_wh"),
        F.sum("unmetered").alias("unmetered_wh"),
        F.avg("pf").alias("power_factor_avg"),
    ]
    for m in MEASURES:
        aggs += [
            F.sum(m).alias(f"{m}_sum"),
            F.min(m).alias(f"{m}_min"),
            F.max(m).alias(f"{m}_max"),
            F.avg(m).alias(f"{m}_avg"),
        ]
    windows = (
        r.withWatermark("event_time", "60 seconds")
        .groupBy(F.col("w.g").alias("g"), "meter", F.col("w.start").alias("start"))
        .agg(*aggs)
    )

    lock = threading.Lock()
    state = {"readings": 0, "rows": 0, "last_read": None, "last_write": None}

    def now():
        return time.monotonic() - started

    def write(batch, batch_id):
        batch = batch.withColumn("window_start", (F.col("start") / 1000).cast("timestamp"))
        day = F.floor(F.col("start") / 86_400_000)
        civil = F.to_date(F.col("window_start"))
        batch = batch.withColumn(
            "bucket",
            F.when(F.col("g") == "minute", day)
            .when(F.col("g") == "hour", F.year(civil) * 100 + F.month(civil))
            .otherwise(F.year(civil))
            .cast("int"),
        ).persist()
        rows = 0
        for g in ("minute", "hour", "day"):
            part = batch.where(F.col("g") == g).drop("g", "start")
            n = part.count()
            if n:
                part.write.format("org.apache.spark.sql.cassandra").mode("append").options(
                    keyspace=a.keyspace, table=f"{g}_view"
                ).save()
                rows += n
        batch.unpersist()
        with lock:
            state["rows"] += rows
            if rows:
                state["last_write"] = now()

    checkpoints = tempfile.mkdtemp(prefix="wattflow-spark-")
    query = (
        windows.writeStream.outputMode("update")
        .foreachBatch(write)
        .option("checkpointLocation", checkpoints)
        .trigger(processingTime="0 seconds")
        .start()
    )

    def summary(word):
        shutil.rmtree(checkpoints, ignore_errors=True)
        with lock:
            print_summary(
                word, state["readings"], state["rows"], state["last_read"], state["last_write"]
            )

    signal.signal(signal.SIGTERM, lambda *_: summary("stopped"))
    ready = False
    seen = set()
    while True:
        time.sleep(0.2)
        for progress in query.recentProgress:
            bid = progress["batchId"]
            if bid in seen:
                continue
            seen.add(bid)
            n = progress.get("numInputRows", 0)
            if n:
                with lock:
                    state["readings"] += n
                    state["last_read"] = now()
        if not ready and a.ready_file and query.lastProgress is not None:
            open(a.ready_file, "w").close()
            ready = True
        with lock:
            last = state["last_read"]
            wrote = state["last_write"]
        status = query.status
        busy = status.get("isTriggerActive") or status.get("isDataAvailable")
        if (
            not busy
            and last is not None
            and wrote is not None
            and now() - max(last, wrote) >= a.exit_when_idle
            and all_counted(state["readings"], a.brokers, a.topic)
        ):
            summary("finished")
        if query.exception() is not None:
            print(f"query failed: {query.exception()}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
