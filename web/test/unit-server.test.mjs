// The dev server serves only its routes, with the right types, from 127.0.0.1.
import assert from "node:assert/strict";
import { test } from "node:test";
import { resolvePath, startServer } from "../scripts/serve.mjs";

test("paths outside the routes are refused", () => {
  assert.equal(resolvePath("/demo/../../Cargo.toml"), undefined);
  assert.equal(resolvePath("/fixtures/%2e%2e/%2e%2e/Cargo.toml"), undefined);
  assert.equal(resolvePath("/node_modules/playwright-core/package.json"), undefined);
  assert.equal(resolvePath("/etc/passwd"), undefined);
  assert.match(resolvePath("/fixtures/tiny/model/config.json"), /tests\/fixtures\/tiny\/model\/config\.json$/);
});

test("serves the fixtures and the demo; 404 elsewhere", async () => {
  const server = await startServer({ port: 0 });
  try {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    let r = await fetch(`${server.url}fixtures/tiny/model/config.json`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type"), /application\/json/);
    assert.equal((await r.json()).vocab_size, 97);
    r = await fetch(`${server.url}demo/`);
    assert.equal(r.status, 200);
    assert.match(await r.text(), /<title>webtune/);
    r = await fetch(`${server.url}Cargo.toml`);
    assert.equal(r.status, 404);
    await r.text();
    r = await fetch(server.url, { redirect: "manual" });
    assert.equal(r.status, 302);
    assert.equal(r.headers.get("location"), "/demo/");
  } finally {
    await server.close();
  }
});
