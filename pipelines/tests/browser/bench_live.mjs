// W5's live figure: how long after a reading the dashboard shows it. Opens the dashboard at
// URL with the "hour" preset (minute windows, live), and for SECONDS records, after every live
// update the page draws, the time it was drawn minus the end of the newest reading it shows
// (both in the views' time, taken in the page). Prints {"latencies_ms": [...], "errors": [...]}.
// Usage: node bench_live.mjs URL SECONDS
import { launch, page as newPage } from "./launch.mjs";

const [url, seconds = "60"] = process.argv.slice(2);
const browser = await launch();
try {
  const { page, errors } = await newPage(browser);
  const latencies = [];
  let newest = -Infinity;
  await page.exposeFunction("wattflowShown", (shown) => {
    if (shown.newest > newest) {
      newest = shown.newest;
      latencies.push(shown.at - shown.newest);
    }
  });
  await page.goto(url);
  await page.waitForFunction(() => window.wattflow && window.wattflow.timings.load, null, { timeout: 30000 });
  await page.click('#presets button[data-preset="hour"]');
  await page.waitForFunction(() => window.wattflow.timings.load && window.wattflow.granularity === "minute", null, { timeout: 30000 });
  // The first updates after the switch may carry readings older than the page's load.
  await page.waitForTimeout(3000);
  latencies.length = 0;
  await page.waitForTimeout(Number(seconds) * 1000);
  console.log(JSON.stringify({ latencies_ms: latencies, errors }));
} finally {
  await browser.close();
}
