// Takes a screenshot of a page in headless Chromium once the dashboard has drawn its charts.
// Usage: node screenshot.mjs URL OUT.png [WIDTH HEIGHT [PRESET]]   (PRESET: hour, day, week, ...)
// (docs/dashboard.png in the README is made this way, against `wattflow demo`.)
import { chromium } from "playwright-core";

const [url, out, width = "1400", height = "1000", preset] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.WATTFLOW_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: Number(width), height: Number(height) } });
  await page.goto(url);
  await page.waitForFunction(() => window.wattflow && window.wattflow.rows.length > 0
    && document.querySelector("#chart-active-power path.series") && window.wattflow.insights, null, { timeout: 30000 });
  if (preset) {
    await page.evaluate(() => { window.wattflow.timings.load = null; });
    await page.click(`#presets button[data-preset="${preset}"]`);
    await page.waitForFunction(() => window.wattflow.timings.load && window.wattflow.insights, null, { timeout: 30000 });
  }
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out, fullPage: false });
} finally {
  await browser.close();
}
