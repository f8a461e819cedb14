"""W1 peer: the history replay of the UCI household file with Polars (Python package).

Does the same job as `wattflow replay`: read the UCI text file (';'-separated, '?' and empty
fields are nulls, d/m/yyyy dates), drop and count the missing rows, aggregate minute, hour and
day windows (count, sum/min/max/avg of the seven measures, active and unmetered energy in Wh,
average power factor) with `group_by_dynamic`, and write one zstd Parquet file per granularity:
<out>/minute/data.parquet, <out>/hour/data.parquet, <out>/day/data.parquet.

Prints one JSON object on stdout with the row counts, for the harness to compare.
Usage: python polars_w1.py --input FILE --out DIR [--threads N]
(--threads sets POLARS_MAX_THREADS, which Polars reads once, when it is imported.)
"""

import argparse
import json
import os

from schema import MEASURES

SOURCE_COLUMNS = [
    "Global_active_power",
    "Global_reactive_power",
    "Voltage",
    "Global_intensity",
    "Sub_metering_1",
    "Sub_metering_2",
    "Sub_metering_3",
]
EVERY = {"minute": "1m", "hour": "1h", "day": "1d"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)
    import polars as pl

    assert pl.thread_pool_size() == args.threads, "POLARS_MAX_THREADS was not honoured"

    schema = {"Date": pl.String, "Time": pl.String}
    schema.update({c: pl.Float64 for c in SOURCE_COLUMNS})
    raw = pl.read_csv(
        args.input,
        separator=";",
        has_header=True,
        schema=schema,
        null_values=["?", ""],
    )
    rows_read = raw.height
    df = (
        raw.rename(dict(zip(SOURCE_COLUMNS, MEASURES)))
        .drop_nulls(MEASURES)
        .select(
            (pl.col("Date") + " " + pl.col("Time"))
            .str.to_datetime("%d/%m/%Y %H:%M:%S", time_unit="ms")
            .alias("ts"),
            *MEASURES,
        )
        .with_columns(
            pl.when((pl.col("global_active_power") == 0) & (pl.col("global_reactive_power") == 0))
            .then(None)
            .otherwise(
                pl.col("global_active_power")
                / (pl.col("global_active_power") ** 2 + pl.col("global_reactive_power") ** 2).sqrt()
            )
            .alias("pf")
        )
        .sort("ts")
    )
    del raw
    readings = df.height

    aggregates = [pl.len().cast(pl.Int64).alias("samples")]
    for m in MEASURES:
        c = pl.col(m)
        aggregates += [
            c.sum().alias(f"{m}_sum"),
            c.min().alias(f"{m}_min"),
            c.max().alias(f"{m}_max"),
            c.mean().alias(f"{m}_avg"),
        ]
    aggregates.append(pl.col("pf").mean().alias("power_factor_avg"))
    active = pl.col("global_active_power_sum") * 1000.0 / 60.0

    columns = ["meter", "window_start", "samples", "covered_seconds"]
    columns += [f"{m}_{a}" for m in MEASURES for a in ("sum", "min", "max", "avg")]
    columns += ["active_energy_wh", "unmetered_wh", "power_factor_avg"]

    counts = {}
    for g, every in EVERY.items():
        view = (
            df.group_by_dynamic("ts", every=every, label="left", closed="left")
            .agg(aggregates)
            .rename({"ts": "window_start"})
            .with_columns(
                pl.lit("household-1").alias("meter"),
                (pl.col("samples") * 60).alias("covered_seconds"),
                active.alias("active_energy_wh"),
                (
                    active
                    - pl.col("sub_metering_1_sum")
                    - pl.col("sub_metering_2_sum")
                    - pl.col("sub_metering_3_sum")
                ).alias("unmetered_wh"),
            )
            .select(columns)
        )
        folder = os.path.join(args.out, g)
        os.makedirs(folder, exist_ok=True)
        view.write_parquet(os.path.join(folder, "data.parquet"), compression="zstd")
        counts[g] = view.height

    print(
        json.dumps(
            {
                "system": "polars",
                "version": pl.__version__,
                "rows_read": rows_read,
                "readings": readings,
                "missing": rows_read - readings,
                **counts,
            }
        )
    )


if __name__ == "__main__":
    main()
