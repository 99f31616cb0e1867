// Browser check of the live mode of the `mooer serve` web page (run by tests/test_web.py).
//
//   node live.js config.json
//
// config.json: {"url", "chromium", "audio" (a WAV file played as the microphone), "task", "sentences"
//               (how many final sentences to wait for), "screenshot"}
//
// Chromium's fake capture device plays the WAV file once as the microphone. The page's live mode is
// started, and stopped once `sentences` final sentences are shown; the shown sentences, the number of
// interim updates and any error are reported. Fails on page errors, console errors and requests to
// another origin. Prints one JSON object and exits 1 on any failure.
"use strict";

const fs = require("fs");
const { chromium } = require("playwright-core");

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const origin = new URL(config.url).origin;
  const failures = [];
  const report = { failures };
  const browser = await chromium.launch({
    executablePath: config.chromium || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${config.audio}%noloop`,
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") failures.push(`console error: ${m.text()}`); });
    page.on("request", (r) => {
      const url = r.url();
      if (!url.startsWith(origin) && !url.startsWith("data:") && !url.startsWith("blob:")
          && !url.startsWith(origin.replace("http", "ws"))) failures.push(`request to another origin: ${url}`);
    });
    page.setDefaultTimeout(config.timeout_ms || 90000);
    await page.goto(config.url, { waitUntil: "networkidle" });
    await page.waitForFunction(() => !document.getElementById("server-info").textContent.includes("connecting"));
    await page.selectOption("#task", config.task);
    await page.click("#live");
    const box = config.task === "ast" ? "#ast-text" : "#asr-text";
    await page.waitForFunction(
      ([sel, n]) => document.querySelectorAll(`${sel} p.seg`).length >= n || !document.getElementById("error").hidden,
      [box, config.sentences]);
    await page.click("#live"); // stop
    await page.waitForSelector("#result[data-state=done], #result[data-state=error]");
    Object.assign(report, await page.evaluate(() => ({
      state: document.getElementById("result").dataset.state,
      interims: Number(document.getElementById("result").dataset.interims || 0),
      error: document.getElementById("error").hidden ? null : document.getElementById("error").textContent,
      asr: [...document.querySelectorAll("#asr-text p.seg")].map((p) => p.textContent),
      ast: [...document.querySelectorAll("#ast-text p.seg")].map((p) => p.textContent),
      meta: document.getElementById("meta").textContent,
      label: document.getElementById("live-label").textContent,
    })));
    await page.screenshot({ path: config.screenshot, fullPage: true });
    if (report.state !== "done") failures.push(`state ${report.state}, error ${report.error}`);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ failures: [`crashed: ${e.stack || e}`] }) + "\n");
  process.exit(2);
});
