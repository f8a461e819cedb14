// Takes a screenshot of a page in headless Chromium once the dashboard has drawn its charts.
// Usage: node screenshot.mjs URL OUT.png [WIDTH HEIGHT [PRESET]]   (PRESET: hour, day, week, ...)
// (docs/dashboard.png in the README is made this way, against `wattflow demo`.)
import { dashboardDrawn, launch, page as newPage } from "./launch.mjs";

const [url, out, width = "1400", height = "1000", preset] = process.argv.slice(2);
const browser = await launch();
try {
  const { page, errors } = await newPage(browser, width, height, true);
  await page.goto(url);
  await dashboardDrawn(page, true);
  if (preset) {
    await page.evaluate(() => { window.wattflow.timings.load = null; });
    await page.click(`#presets button[data-preset="${preset}"]`);
    await page.waitForFunction(() => window.wattflow.timings.load && window.wattflow.insights, null, { timeout: 30000 });
  }
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out, fullPage: false });
  if (errors.length) {
    console.error(`page errors: ${errors.join("; ")}`);
    process.exitCode = 1;
  }
} finally {
  await browser.close();
}
