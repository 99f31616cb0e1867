// Browser end-to-end check of the `mooer serve` web page (run by tests/test_web.py).
//
//   node e2e.js config.json
//
// config.json: {"url", "audio", "screenshot_dir", "chromium", "cases": [{"name", "task", "stream",
//               "hotwords" (optional), "expect": {"asr": str|null, "ast": str|null}}]}
//
// For each case: upload the wav with setInputFiles, choose the task, streaming mode and hotwords, click
// Transcribe, wait for the result, compare the shown texts with the expected ones, save a screenshot.
// Then: a non-audio upload must show the server's error; in a non-secure context the record and live
// buttons must be disabled with an explanation. Also fails on page errors, unexpected console errors and any request
// to another origin (no CDN allowed).
// Prints one JSON object (per-case texts and failures) and exits 1 on any failure.
"use strict";

const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const origin = new URL(config.url).origin;
  const failures = [];
  const report = { cases: [], failures };
  const browser = await chromium.launch({
    executablePath: config.chromium || "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
    headless: true,
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      // the browser logs failed fetches (the deliberate 400 below) as console errors: those are expected
      if (m.type() === "error" && !m.text().includes("status of 400")) failures.push(`console error: ${m.text()}`);
    });
    page.on("request", (r) => {
      const url = r.url();
      if (!url.startsWith(origin) && !url.startsWith("data:") && !url.startsWith("blob:")) {
        failures.push(`request to another origin: ${url}`);
      }
    });
    page.setDefaultTimeout(config.timeout_ms || 60000);
    await page.goto(config.url, { waitUntil: "networkidle" });
    const title = await page.title();
    if (!title.includes("MooER")) failures.push(`unexpected page title ${JSON.stringify(title)}`);
    await page.waitForFunction(() => !document.getElementById("server-info").textContent.includes("connecting"));

    for (const c of config.cases) {
      await page.setInputFiles("#file-input", config.audio);
      await page.selectOption("#task", c.task);
      await page.setChecked("#stream", Boolean(c.stream));
      await page.fill("#hotwords", c.hotwords || "");
      await page.waitForSelector("#transcribe:not([disabled])");
      await page.click("#transcribe");
      await page.waitForSelector("#result[data-state=done], #result[data-state=error]");
      const got = await page.evaluate(() => ({
        state: document.getElementById("result").dataset.state,
        error: document.getElementById("error").hidden ? null : document.getElementById("error").textContent,
        asr: document.getElementById("asr-box").hidden ? null : document.getElementById("asr-text").textContent,
        ast: document.getElementById("ast-box").hidden ? null : document.getElementById("ast-text").textContent,
        meta: document.getElementById("meta").textContent,
      }));
      const shot = path.join(config.screenshot_dir, `${c.name}.png`);
      await page.screenshot({ path: shot, fullPage: true });
      report.cases.push({ name: c.name, screenshot: shot, ...got });
      if (got.state !== "done") failures.push(`${c.name}: state ${got.state}, error ${got.error}`);
      for (const key of ["asr", "ast"]) {
        if (got[key] !== c.expect[key]) {
          failures.push(`${c.name}: ${key} shown ${JSON.stringify(got[key])}, expected ${JSON.stringify(c.expect[key])}`);
        }
      }
    }

    // A file that is not audio: the server's 400 message is shown and the page stays usable.
    await page.setInputFiles("#file-input", { name: "notes.txt", mimeType: "text/plain",
                                              buffer: Buffer.from("not audio at all\n".repeat(40)) });
    await page.setChecked("#stream", false);
    await page.click("#transcribe");
    await page.waitForSelector("#result[data-state=error]");
    const shown = await page.textContent("#error");
    report.bad_file_error = shown;
    if (!shown.includes("notes.txt") || !shown.includes("not a decodable audio file")) {
      failures.push(`bad file: error shown ${JSON.stringify(shown)}`);
    }
    await page.screenshot({ path: path.join(config.screenshot_dir, "bad_file.png"), fullPage: true });

    // Not a secure context (plain http on another host): recording is disabled and the page says why.
    const insecure = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    await insecure.addInitScript(() => Object.defineProperty(window, "isSecureContext", { value: false }));
    await insecure.goto(config.url, { waitUntil: "networkidle" });
    const mic = await insecure.evaluate(() => ({
      disabled: document.getElementById("record").disabled,
      live: document.getElementById("live").disabled,
      note: !document.getElementById("mic-note").hidden,
    }));
    report.insecure = mic;
    if (!mic.disabled || !mic.live || !mic.note) failures.push(`insecure context: ${JSON.stringify(mic)}`);
    await insecure.screenshot({ path: path.join(config.screenshot_dir, "insecure_context.png"), fullPage: true });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ cases: [], failures: [`crashed: ${e.stack || e}`] }) + "\n");
  process.exit(2);
});
