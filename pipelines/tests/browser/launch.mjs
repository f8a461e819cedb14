// What every driver script here shares: Debian's Chromium (or $WATTFLOW_CHROMIUM) through
// playwright-core, and a page that collects its errors.
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.WATTFLOW_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
}

// A page of `width` × `height` whose page errors (and, with `console`, console errors) go to
// the returned `errors` array.
export async function page(browser, width = 1400, height = 1000, console = false) {
  const p = await browser.newPage({ viewport: { width: Number(width), height: Number(height) } });
  const errors = [];
  p.on("pageerror", (e) => errors.push(String(e)));
  if (console) p.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  return { page: p, errors };
}

// Waits until the dashboard has loaded its rows and drawn its charts.
export async function dashboardDrawn(p, insights = false) {
  await p.waitForFunction((insights) => window.wattflow && window.wattflow.rows.length > 0
    && document.querySelector("#chart-active-power path.series") && (!insights || window.wattflow.insights),
  insights, { timeout: 30000 });
}
