// Takes the README's screenshot of the demo: the bundled model (assets/model when the repository
// has it, else the tiny test fixture) trained in headless Chromium with a held-out split, then the
// generation box filled in, written to docs/demo.png.   node scripts/screenshot.mjs [out.png] [steps]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./serve.mjs";

const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const out = resolve(process.argv[2] ?? join(web, "..", "docs", "demo.png"));
const steps = process.argv[3];
const server = await startServer({ port: 0 });
const profile = mkdtempSync(join(tmpdir(), "webtune-shot-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 960, height: 1200 },
  args: [
    "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
    "--use-vulkan=swiftshader", "--use-webgpu-adapter=swiftshader", "--use-angle=swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  ],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${server.url}demo/`);
  await page.waitForFunction(() => document.body.dataset.state === "idle", null, { timeout: 60_000 });
  const bundle = await page.evaluate(() => globalThis.webtuneDemo.bundle());
  await page.click("#use-tiny");
  await page.waitForFunction(() => /^[\w.-]+\.jsonl: \w/.test(document.getElementById("dataset-status")?.textContent ?? ""));
  const fill = async (name, value) => page.fill(`#options [name=${name}]`, value);
  if (bundle === "tiny") {
    await fill("steps", steps ?? "40");
    await fill("evalSplit", "0.2");
    await fill("evalEvery", "5");
  } else if (steps) await fill("steps", steps);
  await page.click("#train");
  await page.waitForFunction(() => ["done", "failed"].includes(document.body.dataset.state ?? ""), null, { timeout: 590_000 });
  await page.click("#generate");
  await page.waitForFunction(() => !/^(generating…)?$/.test(document.getElementById("gen-status")?.textContent ?? ""), null, {
    timeout: 120_000,
  });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out} (bundle: ${bundle})`);
} finally {
  await context.close();
  await server.close();
  rmSync(profile, { recursive: true, force: true });
}
