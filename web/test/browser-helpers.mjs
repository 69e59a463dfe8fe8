// Shared by the browser tests: headless Chromium (Debian's package; WebGPU on SwiftShader) on
// the demo page served from 127.0.0.1, and small helpers that wait for what the page shows.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "../scripts/serve.mjs";

export const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const repo = resolve(web, "..");
export const tiny = join(repo, "tests", "fixtures", "tiny");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
  "--use-webgpu-adapter=swiftshader",
  "--use-angle=swiftshader",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];
// SwiftShader runs WebGPU on the CPU: the first steps compile every shader.
export const TRAIN_TIMEOUT = 240_000;

for (const [what, path] of [
  ["the wasm engine (run tools/build-web.sh)", join(web, "dist", "wasm", "webtune_bg.wasm")],
  ["the demo (run npm run build in web/)", join(web, "dist", "demo", "demo.js")],
  [`Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM)`, executablePath],
]) {
  if (!existsSync(path)) throw new Error(`the browser tests need ${what}: ${path} is missing`);
}

/** The native CLI, for comparisons (`cargo build` makes it; WEBTUNE_BIN names another). */
export function webtuneBin() {
  const found = [process.env.WEBTUNE_BIN, join(repo, "target", "debug", "webtune"), join(repo, "target", "release", "webtune")]
    .filter(Boolean)
    .find((p) => existsSync(p));
  if (!found) throw new Error("the test needs the native webtune binary: run cargo build (or set WEBTUNE_BIN)");
  return found;
}

/** Runs the native CLI; returns stdout (throws with stderr on failure). */
export function runWebtune(args) {
  try {
    return execFileSync(webtuneBin(), args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    throw new Error(`webtune ${args.join(" ")} failed: ${e.stderr || e.message}`);
  }
}

/**
 * Starts the server and Chromium with a fresh profile on the demo page, waits for the engine.
 * Returns the session: page, requests seen, console lines, helpers, close().
 */
export async function openDemo() {
  const server = await startServer({ port: 0 });
  const profile = mkdtempSync(join(tmpdir(), "webtune-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ARGS,
    acceptDownloads: true,
    viewport: { width: 1000, height: 1400 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const requests = [];
  const consoleLines = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  const s = {
    server,
    page,
    requests,
    consoleLines,
    async load() {
      await page.goto(`${server.url}demo/?bundle=tiny`); // the tests' bundled model, whether assets/ exists or not
      await page.waitForFunction(() => ["idle", "failed"].includes(document.body.dataset.state ?? ""), null, {
        timeout: 60_000,
      });
      const gpu = await page.textContent("#gpu");
      assert.equal(await page.getAttribute("body", "data-state"), "idle", `the engine did not start: ${gpu}\n${consoleLines.join("\n")}`);
    },
    async reload() {
      await page.reload();
      await page.waitForFunction(() => ["idle", "failed"].includes(document.body.dataset.state ?? ""), null, {
        timeout: 60_000,
      });
    },
    async close() {
      await context.close();
      await server.close();
      rmSync(profile, { recursive: true, force: true });
    },
    text: async (sel) => (await page.textContent(sel)) ?? "",
    cls: async (sel) => (await page.getAttribute(sel, "class")) ?? "",
    /** Waits until #id's text matches `re` (statuses change asynchronously, so wait for the very text). */
    async waitText(id, re, timeout = 60_000) {
      try {
        await page.waitForFunction(
          ([id, source, flags]) => new RegExp(source, flags).test(document.getElementById(id)?.textContent ?? ""),
          [id, re.source, re.flags],
          { timeout },
        );
      } catch (e) {
        throw new Error(`waiting for #${id} to match ${re}: ${e.message}\n${await s.report()}`);
      }
      return s.text(`#${id}`);
    },
    /** What the page shows, for failure messages. */
    async report() {
      const ids = ["gpu", "resume-status", "model-status", "dataset-status", "eval-status", "adapter-status", "options-status",
        "progress-text", "gen-status", "export-status"];
      const texts = await page.evaluate((ids) => ids.map((id) => `${id}: ${document.getElementById(id)?.textContent}`), ids);
      const state = await page.getAttribute("body", "data-state");
      return [`state: ${state}`, ...texts, "console:", ...consoleLines.slice(-20)].join("\n");
    },
    async waitState(states, timeout = TRAIN_TIMEOUT) {
      try {
        await page.waitForFunction((st) => st.includes(document.body.dataset.state ?? ""), states, { timeout });
      } catch (e) {
        throw new Error(`waiting for the page state ${states.join(" / ")}: ${e.message}\n${await s.report()}`);
      }
      return page.getAttribute("body", "data-state");
    },
    /** Sets the training form's fields (`form` is another form's id). */
    async setOptions(values, form = "options") {
      for (const [name, value] of Object.entries(values)) {
        const sel = `#${form} [name=${name}]`;
        const tag = await page.$eval(sel, (el) => el.tagName);
        if (typeof value === "boolean") await page.$eval(sel, (el, v) => (el.checked = v), value);
        else if (tag === "SELECT") await page.selectOption(sel, String(value));
        else await page.fill(sel, String(value));
      }
    },
    /** Picks the tiny fixture model's files (with its tokenizer unless `tokenizer` is false). */
    async loadTinyModel({ tokenizer = false } = {}) {
      const files = [file(join(tiny, "model", "config.json")), file(join(tiny, "model", "model.safetensors"))];
      if (tokenizer) files.push(file(join(tiny, "tokenizer", "tokenizer.json")));
      await page.setInputFiles("#model-files", files);
      await s.waitText("model-status", /^model[:/]/);
      // Loading a model reloads the datasets chosen before (if any): let that finish first.
      await page.waitForFunction(() => !/Reading the dataset/.test(document.getElementById("dataset-status")?.textContent ?? ""));
    },
    async downloadBytes(buttonId) {
      const [d] = await Promise.all([page.waitForEvent("download"), page.click(`#${buttonId}`)]);
      return { name: d.suggestedFilename(), bytes: readFileSync(await d.path()) };
    },
    losses: () => page.evaluate(() => globalThis.webtuneDemo.losses()),
    steps: () => page.evaluate(() => globalThis.webtuneDemo.steps()),
    evals: () => page.evaluate(() => globalThis.webtuneDemo.evals()),
  };
  await s.load();
  return s;
}

/** A file for `setInputFiles` from a path (any name). */
export function file(path, name = path.split("/").pop()) {
  return { name, mimeType: "application/octet-stream", buffer: readFileSync(path) };
}

/** A file for `setInputFiles` from text. */
export function textFile(name, text) {
  return { name, mimeType: "text/plain", buffer: Buffer.from(text) };
}

/** Requests that left the page's origin. */
export function foreignRequests(s) {
  const origin = new URL(s.server.url).origin;
  return s.requests.filter((u) => !(u.startsWith(`${origin}/`) || u.startsWith(`blob:${origin}/`) || u.startsWith("data:")));
}
