"""W5 peer: DuckDB answering the serving queries over the same Parquet views, warm connection.

For each query (granularity, meter, from, to): the rows of `<views>/<granularity>/**/*.parquet`
(Hive partitions) of that meter with `from <= window_start < to`, in window order, fetched
into Python (`fetchall`). One untimed warm-up, then --requests timed runs. Prints one JSON
object on stdout: per query the latencies in ms and the row count.
Usage: python duckdb_w5.py --views DIR --meter M --query hour,2007-01-01,2008-01-01 [...] --requests 200
"""

import argparse
import json
import time

import duckdb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", required=True)
    parser.add_argument("--meter", required=True)
    parser.add_argument("--query", action="append", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    out = {"system": "duckdb", "version": duckdb.__version__, "queries": []}
    for spec in args.query:
        granularity, start, end = spec.split(",")
        sql = (
            f"SELECT * FROM read_parquet('{args.views}/{granularity}/**/*.parquet', hive_partitioning = true) "
            "WHERE meter = ? AND window_start >= CAST(? AS TIMESTAMP) AND window_start < CAST(? AS TIMESTAMP) "
            "ORDER BY window_start"
        )
        params = [args.meter, start, end]
        rows = con.execute(sql, params).fetchall()  # warm-up
        latencies = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            rows = con.execute(sql, params).fetchall()
            latencies.append((time.perf_counter() - t0) * 1000.0)
        out["queries"].append({"query": spec, "rows": len(rows), "latencies_ms": latencies})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
