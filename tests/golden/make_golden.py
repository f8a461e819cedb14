#!/usr/bin/env python3
"""Golden hour and day views of the first 30 days of the UCI household power file.

An independent, pure-Python recomputation (no wattflow code, no floats where it matters) of what
`wattflow replay` must write for `../shared/data/uci_first_30_days.txt`. Run it once and commit
its outputs; `pipelines/tests/replay_golden.rs` compares the Parquet views with them.

    python3 tests/golden/make_golden.py [DATA_FILE] [OUT_DIR]

Defaults: DATA_FILE = <repo>/../shared/data/uci_first_30_days.txt, OUT_DIR = this folder.
Writes uci_30_days_hour.csv and uci_30_days_day.csv, one row per window holding at least one
reading, sorted by window start.

Columns:
  meter, window_start (naive ISO-8601), samples, covered_seconds,
  for each measure: <m>_sum, <m>_min, <m>_max (exact decimals with 3 places, from integer
  thousandths) and <m>_avg (mean, 9 decimals),
  active_energy_wh = sum(P_kW * 1000 * 60) / 3600 (6 decimals),
  unmetered_wh = active_energy_wh - sum(sub_metering_1..3) (6 decimals),
  power_factor_avg = mean over readings with P or Q non-zero of P / sqrt(P^2 + Q^2)
  (9 decimals; empty when there is none).
"""

import csv
import math
import os
import sys
from decimal import Decimal, ROUND_HALF_EVEN

MEASURES = [
    "global_active_power",
    "global_reactive_power",
    "voltage",
    "global_intensity",
    "sub_metering_1",
    "sub_metering_2",
    "sub_metering_3",
]
METER = "household-1"  # the replay's default meter for files without a Meter column
INTERVAL_S = 60


def thousandths(text):
    """Exact integer thousandths of a decimal with exactly three places."""
    d = Decimal(text)
    assert d.as_tuple().exponent == -3, f"not 3 decimals: {text!r}"
    v = d * 1000
    assert v == v.to_integral_value()
    return int(v)


def fmt3(v):
    sign = "-" if v < 0 else ""
    v = abs(v)
    return f"{sign}{v // 1000}.{v % 1000:03d}"


def q(d, places):
    return format(Decimal(d).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN), "f")


class Window:
    def __init__(self):
        self.samples = 0
        self.sums = [0] * 7
        self.mins = [None] * 7
        self.maxs = [None] * 7
        self.pf_sum = 0.0
        self.pf_n = 0

    def add(self, values):
        self.samples += 1
        for i, v in enumerate(values):
            self.sums[i] += v
            self.mins[i] = v if self.mins[i] is None else min(self.mins[i], v)
            self.maxs[i] = v if self.maxs[i] is None else max(self.maxs[i], v)
        p, r = values[0], values[1]
        if p != 0 or r != 0:
            self.pf_sum += p / math.sqrt(p * p + r * r)
            self.pf_n += 1

    def row(self, start):
        out = [METER, start, str(self.samples), str(self.samples * INTERVAL_S)]
        for i in range(7):
            avg = Decimal(self.sums[i]) / 1000 / self.samples
            out += [fmt3(self.sums[i]), fmt3(self.mins[i]), fmt3(self.maxs[i]), q(avg, 9)]
        # P in W (thousandths of kW) over 60 s each: Wh = sum(P_W * 60) / 3600.
        energy = Decimal(self.sums[0] * INTERVAL_S) / 3600
        sub_wh = Decimal(self.sums[4] + self.sums[5] + self.sums[6]) / 1000
        out += [q(energy, 6), q(energy - sub_wh, 6)]
        out.append(q(Decimal(repr(self.pf_sum / self.pf_n)), 9) if self.pf_n else "")
        return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    data = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        repo, "..", "shared", "data", "uci_first_30_days.txt")
    out_dir = sys.argv[2] if len(sys.argv) > 2 else here

    hours, days = {}, {}
    rows = missing = 0
    with open(data, "rb") as f:
        header = f.readline().decode().rstrip("\r\n").split(";")
        assert header[:2] == ["Date", "Time"], header
        for raw in f:
            line = raw.decode().rstrip("\r\n")
            if not line:
                continue
            rows += 1
            fields = line.split(";")
            assert len(fields) == 9, line
            if all(x in ("?", "") for x in fields[2:]):
                missing += 1
                continue
            d, m, y = (int(x) for x in fields[0].split("/"))
            hh, mm, ss = (int(x) for x in fields[1].split(":"))
            values = [thousandths(x) for x in fields[2:]]
            hour = f"{y:04d}-{m:02d}-{d:02d}T{hh:02d}:00:00"
            day = f"{y:04d}-{m:02d}-{d:02d}T00:00:00"
            hours.setdefault(hour, Window()).add(values)
            days.setdefault(day, Window()).add(values)

    columns = ["meter", "window_start", "samples", "covered_seconds"]
    for name in MEASURES:
        columns += [f"{name}_sum", f"{name}_min", f"{name}_max", f"{name}_avg"]
    columns += ["active_energy_wh", "unmetered_wh", "power_factor_avg"]
    for name, windows in (("hour", hours), ("day", days)):
        path = os.path.join(out_dir, f"uci_30_days_{name}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(columns)
            for start in sorted(windows):
                w.writerow(windows[start].row(start))
        print(f"{path}: {len(windows)} windows")
    print(f"{rows} rows, {missing} missing, {rows - missing} readings")


if __name__ == "__main__":
    main()
