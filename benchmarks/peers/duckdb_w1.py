"""W1 peer: the history replay of the UCI household file with DuckDB (Python package).

Does the same job as `wattflow replay`: read the UCI text file (';'-separated, '?' and empty
fields are nulls, d/m/yyyy dates), drop and count the missing rows, aggregate minute, hour and
day windows (count, sum/min/max/avg of the seven measures, active and unmetered energy in Wh,
average power factor) and write one zstd Parquet file per granularity:
<out>/minute/data.parquet, <out>/hour/data.parquet, <out>/day/data.parquet.

Prints one JSON object on stdout with the row counts, for the harness to compare.
Usage: python duckdb_w1.py --input FILE --out DIR [--threads N]
"""

import argparse
import json
import os

import duckdb

from schema import MEASURES

GRANULARITIES = ["minute", "hour", "day"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    con.execute("SET preserve_insertion_order = false")

    csv_columns = {"Date": "VARCHAR", "Time": "VARCHAR"}
    csv_columns.update({m: "DOUBLE" for m in MEASURES})
    column_spec = ", ".join(f"'{k}': '{v}'" for k, v in csv_columns.items())
    not_null = " AND ".join(f"{m} IS NOT NULL" for m in MEASURES)
    # Parse once into a table; the three views are then aggregated from it.
    con.execute(
        f"""
        CREATE TEMP TABLE raw AS
        SELECT strptime(Date || ' ' || Time, '%d/%m/%Y %H:%M:%S') AS ts, {", ".join(MEASURES)}
        FROM read_csv(?, delim = ';', header = true, nullstr = ['?', ''],
                      columns = {{{column_spec}}}, auto_detect = false)
        """,
        [args.input],
    )
    rows_read, readings = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {not_null}) FROM raw"
    ).fetchone()
    con.execute(
        f"""
        CREATE TEMP TABLE r AS
        SELECT ts, {", ".join(MEASURES)},
               CASE WHEN global_active_power = 0 AND global_reactive_power = 0 THEN NULL
                    ELSE global_active_power
                         / sqrt(global_active_power * global_active_power
                                + global_reactive_power * global_reactive_power)
               END AS pf
        FROM raw WHERE {not_null}
        """
    )
    con.execute("DROP TABLE raw")

    aggregates = ", ".join(
        f"sum({m}) AS {m}_sum, min({m}) AS {m}_min, max({m}) AS {m}_max, avg({m}) AS {m}_avg"
        for m in MEASURES
    )
    counts = {}
    for g in GRANULARITIES:
        folder = os.path.join(args.out, g)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "data.parquet")
        # COPY ... TO answers with the number of rows it wrote.
        (counts[g],) = con.execute(
            f"""
            COPY (
              SELECT 'household-1' AS meter, date_trunc('{g}', ts) AS window_start,
                     count(*) AS samples, count(*) * 60 AS covered_seconds,
                     {aggregates},
                     sum(global_active_power) * 1000.0 / 60.0 AS active_energy_wh,
                     sum(global_active_power) * 1000.0 / 60.0
                       - sum(sub_metering_1) - sum(sub_metering_2) - sum(sub_metering_3)
                       AS unmetered_wh,
                     avg(pf) AS power_factor_avg
              FROM r GROUP BY window_start ORDER BY window_start
            ) TO '{path}' (FORMAT parquet, COMPRESSION zstd)
            """
        ).fetchone()

    print(
        json.dumps(
            {
                "system": "duckdb",
                "version": duckdb.__version__,
                "rows_read": rows_read,
                "readings": readings,
                "missing": rows_read - readings,
                **counts,
            }
        )
    )


if __name__ == "__main__":
    main()
