// W5's dashboard figure: how long the page takes to fetch and draw a year of hourly points and
// a day of minute points (METER's windows from YEAR_START to a year later, and the day
// DAY_START), until its charts are painted and until its insights are shown, and the cost of
// one redraw and of one hover. Prints JSON.
// Usage: node bench_render.mjs URL METER YEAR_START DAY_START [REPEATS]
import { launch, page as newPage } from "./launch.mjs";

const [url, meter, yearStart, dayStart, repeats = "5"] = process.argv.slice(2);
const browser = await launch();
try {
  const { page, errors } = await newPage(browser);
  await page.goto(url);
  await page.waitForFunction(() => window.wattflow && window.wattflow.timings.load, null, { timeout: 30000 });
  const out = { errors };
  for (const [name, granularity, from, days] of [["year_of_hours", "hour", yearStart, 365], ["day_of_minutes", "minute", dayStart, 1]]) {
    const runs = [];
    for (let k = 0; k < Number(repeats); k++) {
      const t = await page.evaluate(async ([meter, granularity, from, days]) => {
        const s = window.wattflow;
        s.meter = meter;
        document.getElementById("granularity").value = granularity;
        s.preset = "custom";
        const a = Date.parse(from + "T00:00:00Z");
        s.timings.load = null;
        setRange(a, a + days * 86400e3);
        const t0 = performance.now();
        const loading = load();
        // Until the charts are drawn and the browser has laid them out and painted them
        // (the insights load after the charts).
        while (!s.timings.load) await new Promise((r) => setTimeout(r, 1));
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        const total = performance.now() - t0;
        await loading;
        const insights = performance.now() - t0;
        const redraw0 = performance.now();
        drawCharts();
        const redraw = performance.now() - redraw0;
        const svg = document.querySelector("#chart-active-power svg");
        const box = svg.getBoundingClientRect();
        const hover0 = performance.now();
        for (let i = 0; i < 100; i++) {
          svg.dispatchEvent(new MouseEvent("mousemove", { clientX: box.left + box.width * (i + 0.5) / 100, clientY: box.top + box.height / 2, bubbles: true }));
        }
        const hover = (performance.now() - hover0) / 100;
        return { rows: s.rows.length, fetch_ms: s.timings.load.fetch, draw_ms: s.timings.load.draw, total_ms: total, insights_ms: insights, redraw_ms: redraw, hover_ms: hover };
      }, [meter, granularity, from, days]);
      runs.push(t);
    }
    out[name] = runs;
  }
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
