// The dev server for the demo page and the browser tests: static files from 127.0.0.1 only,
// no dependencies. Serves web/demo, web/dist, uPlot from web/node_modules, and the repository's
// tests/fixtures (the tiny model) and assets/ (the bundled models, once they exist).
//
//   node scripts/serve.mjs [--port 8080]      then open http://127.0.0.1:8080/

import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const web = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repo = resolve(web, "..");

/** URL prefix -> folder. Nothing outside these is served. */
const ROUTES = [
  ["/demo/", join(web, "demo")],
  ["/dist/", join(web, "dist")],
  ["/node_modules/uplot/dist/", join(web, "node_modules", "uplot", "dist")],
  ["/fixtures/", join(repo, "tests", "fixtures")],
  ["/assets/", join(repo, "assets")],
];

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".jsonl": "application/jsonl; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".wasm": "application/wasm",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".ts": "text/plain; charset=utf-8",
};

/** The file a URL path names, or undefined when it is outside every route. */
export function resolvePath(urlPath) {
  let path;
  try {
    path = decodeURIComponent(urlPath.split("?")[0]);
  } catch {
    return undefined;
  }
  for (const [prefix, dir] of ROUTES) {
    if (!path.startsWith(prefix)) continue;
    const file = resolve(dir, `.${sep}${path.slice(prefix.length)}`);
    if (file !== dir && !file.startsWith(dir + sep)) return undefined;
    return file;
  }
  return undefined;
}

/** Starts the server; resolves to `{ url, close() }`. Port 0 picks a free one. */
export function startServer({ port = 8080, host = "127.0.0.1", log = false } = {}) {
  const server = createServer(async (req, res) => {
    const path = req.url ?? "/";
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405).end();
      return;
    }
    if (path === "/" || path === "/demo") {
      res.writeHead(302, { Location: "/demo/" }).end();
      return;
    }
    let file = resolvePath(path);
    try {
      if (file && (await stat(file)).isDirectory()) file = join(file, "index.html");
      const info = file ? await stat(file) : undefined;
      if (!file || !info || !info.isFile()) throw new Error("not found");
      res.writeHead(200, {
        "Content-Type": TYPES[extname(file).toLowerCase()] ?? "application/octet-stream",
        "Content-Length": info.size,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
      });
      if (req.method === "HEAD") res.end();
      else createReadStream(file).pipe(res);
      if (log) console.log(`200 ${path}`);
    } catch {
      res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" }).end(`not found: ${path}\n`);
      if (log) console.log(`404 ${path}`);
    }
  });
  return new Promise((resolveStart, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const { port: actual } = server.address();
      resolveStart({
        url: `http://${host}:${actual}/`,
        close: () =>
          new Promise((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--port");
  const port = i > 0 ? Number(process.argv[i + 1]) : 8080;
  const { url } = await startServer({ port, log: true });
  console.log(`webtune demo: ${url}demo/  (Ctrl-C to stop)`);
}
