// Drives the dashboard in a real headless Chromium for pipelines/tests/dashboard.rs.
// Usage: node dashboard.mjs URL SCREENSHOT.png
// Prints one JSON object per line on stdout: {"step": "loaded", ...what the page shows},
// then {"step": "ready"}; waits for a line "GO <window_start_ms>" on stdin (the test has just
// added that speed-view row) and prints {"step": "live", ...} once the page shows it.
import readline from "node:readline";
import { dashboardDrawn, launch, page as newPage } from "./launch.mjs";

const [url, shot] = process.argv.slice(2);
const say = (o) => console.log(JSON.stringify(o));
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const browser = await launch();
try {
  const { page, errors } = await newPage(browser, 1400, 1900, true);
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(url);
  await dashboardDrawn(page, true);
  const shown = await page.evaluate(() => {
    const s = window.wattflow;
    const panels = {};
    for (const svg of document.querySelectorAll("svg[data-panel]")) {
      panels[svg.dataset.panel] = [...svg.querySelectorAll("path.series")].map((p) => ({
        name: p.dataset.name, column: p.dataset.column, count: Number(p.dataset.count),
        first: p.dataset.first === "" ? null : Number(p.dataset.first),
        last: p.dataset.last === "" ? null : Number(p.dataset.last),
        drawn: (p.getAttribute("d") || "").length,
      }));
    }
    return {
      granularity: s.granularity, from: s.from, to: s.to, rows: s.rows.length,
      first: s.rows[0].window_start_ms, last: s.rows[s.rows.length - 1].window_start_ms,
      status: document.getElementById("status").textContent,
      shares: [...document.querySelectorAll("#shares .share")].map((d) => [d.dataset.part, d.lastElementChild.textContent]),
      summary: document.getElementById("summary").textContent,
      panels,
    };
  });
  // Hover the middle of the active-power chart: the tooltip shows that window's values.
  const box = await page.locator("#chart-active-power svg").boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5);
  const tooltip = await page.locator("#tooltip").innerText();
  say({ step: "loaded", ...shown, tooltip, errors, foreign: requests.filter((r) => !r.startsWith(new URL(url).origin)) });
  say({ step: "ready" });
  const go = await nextLine();
  const start = Number(go.split(" ")[1]);
  await page.waitForFunction((t) => window.wattflow.rows.some((r) => r.window_start_ms === t), start, { timeout: 10000 });
  const live = await page.evaluate((t) => {
    const row = window.wattflow.rows.find((r) => r.window_start_ms === t);
    const path = document.querySelector('#chart-active-power path[data-column="global_active_power_avg"]');
    return { row, last: Number(path.dataset.last), status: document.getElementById("status").textContent };
  }, start);
  say({ step: "live", ...live });
  await page.mouse.move(0, 0);
  await page.screenshot({ path: shot, fullPage: true });
  say({ step: "done", errors });
} finally {
  await browser.close();
}
