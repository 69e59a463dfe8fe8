// Where the worker keeps a run's checkpoint so it survives a page reload: the origin-private
// file system (navigator.storage.getDirectory()), or IndexedDB where OPFS is missing. One
// checkpoint per store name (a new save replaces the old one); a save is all or nothing:
//
// - OPFS: <name>/step-<N>/<file> for every file, then <name>/latest.json = {"slot", "step"} is
//   written last (a crash before that leaves the previous checkpoint in place), then older slots
//   are removed.
// - IndexedDB: database "webtune-checkpoints", keys [name, file], every file put in one
//   transaction (which commits whole or not at all).

import type { StorageKind } from "./protocol.js";

export type Files = Record<string, Uint8Array>;

export interface CheckpointStore {
  readonly kind: Exclude<StorageKind, "none">;
  /** Replaces the stored checkpoint with `files`, saved at `step`. */
  save(step: number, files: Files): Promise<void>;
  /** One file of the stored checkpoint, or undefined when there is none (or it lacks the file). */
  read(name: string): Promise<Uint8Array | undefined>;
  /** Every file of the stored checkpoint, or undefined when there is none. */
  load(): Promise<{ step: number; files: Files } | undefined>;
  clear(): Promise<void>;
}

const LATEST = "latest.json";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The methods of the File System API this file uses (not all are in TypeScript's DOM types). */
interface DirHandle {
  getDirectoryHandle(name: string, o?: { create?: boolean }): Promise<DirHandle>;
  getFileHandle(name: string, o?: { create?: boolean }): Promise<FileHandle>;
  removeEntry(name: string, o?: { recursive?: boolean }): Promise<void>;
  keys(): AsyncIterable<string>;
}
interface FileHandle {
  getFile(): Promise<File>;
  createWritable?: () => Promise<{ write(data: BufferSource): Promise<void>; close(): Promise<void> }>;
  createSyncAccessHandle?: () => Promise<{
    truncate(n: number): void;
    write(data: BufferSource, o: { at: number }): number;
    flush(): void;
    close(): void;
  }>;
}

async function writeFile(dir: DirHandle, name: string, bytes: Uint8Array): Promise<void> {
  const fh = await dir.getFileHandle(name, { create: true });
  const data = bytes as Uint8Array<ArrayBuffer>;
  if (fh.createWritable) {
    const w = await fh.createWritable(); // commits on close, atomically
    await w.write(data);
    await w.close();
  } else if (fh.createSyncAccessHandle) {
    const h = await fh.createSyncAccessHandle(); // workers only (Safari has no createWritable in workers)
    try {
      h.truncate(0);
      h.write(data, { at: 0 });
      h.flush();
    } finally {
      h.close();
    }
  } else {
    throw new Error("this browser cannot write to its origin-private file system");
  }
}

async function readFile(dir: DirHandle, name: string): Promise<Uint8Array | undefined> {
  try {
    const f = await (await dir.getFileHandle(name)).getFile();
    return new Uint8Array(await f.arrayBuffer());
  } catch {
    return undefined;
  }
}

class OpfsStore implements CheckpointStore {
  readonly kind = "opfs" as const;
  constructor(private readonly dir: DirHandle) {}

  async save(step: number, files: Files): Promise<void> {
    const slot = `step-${step}`;
    await this.dir.removeEntry(slot, { recursive: true }).catch(() => undefined); // a leftover of the same step
    const d = await this.dir.getDirectoryHandle(slot, { create: true });
    for (const [name, bytes] of Object.entries(files)) await writeFile(d, name, bytes);
    await writeFile(this.dir, LATEST, encoder.encode(JSON.stringify({ slot, step })));
    for (const name of await this.entries()) {
      if (name !== slot && name !== LATEST) await this.dir.removeEntry(name, { recursive: true }).catch(() => undefined);
    }
  }

  private async entries(): Promise<string[]> {
    const out: string[] = [];
    for await (const name of this.dir.keys()) out.push(name);
    return out;
  }

  private async latest(): Promise<{ slot: DirHandle; step: number } | undefined> {
    const bytes = await readFile(this.dir, LATEST);
    if (!bytes) return undefined;
    try {
      const { slot, step } = JSON.parse(decoder.decode(bytes)) as { slot: string; step: number };
      return { slot: await this.dir.getDirectoryHandle(slot), step };
    } catch {
      return undefined;
    }
  }

  async read(name: string): Promise<Uint8Array | undefined> {
    const l = await this.latest();
    return l && readFile(l.slot, name);
  }

  async load(): Promise<{ step: number; files: Files } | undefined> {
    const l = await this.latest();
    if (!l) return undefined;
    const files: Files = {};
    for await (const name of l.slot.keys()) {
      const bytes = await readFile(l.slot, name);
      if (bytes) files[name] = bytes;
    }
    return { step: l.step, files };
  }

  async clear(): Promise<void> {
    await this.dir.removeEntry(LATEST).catch(() => undefined);
    for (const name of await this.entries()) await this.dir.removeEntry(name, { recursive: true }).catch(() => undefined);
  }
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
  });
}

class IdbStore implements CheckpointStore {
  readonly kind = "indexeddb" as const;
  /** Every key of this store: [name, file]. */
  private readonly range: IDBKeyRange;
  constructor(
    private readonly db: IDBDatabase,
    private readonly name: string,
  ) {
    this.range = IDBKeyRange.bound([name, ""], [name, "\uffff"]);
  }

  private tx(mode: IDBTransactionMode): { tx: IDBTransaction; files: IDBObjectStore } {
    const tx = this.db.transaction(IDB_STORE, mode);
    return { tx, files: tx.objectStore(IDB_STORE) };
  }

  async save(step: number, files: Files): Promise<void> {
    const { tx, files: s } = this.tx("readwrite");
    s.delete(this.range);
    for (const [file, bytes] of Object.entries(files)) s.put(bytes, [this.name, file]);
    s.put(encoder.encode(JSON.stringify({ step })), [this.name, LATEST]);
    await done(tx);
  }

  async read(file: string): Promise<Uint8Array | undefined> {
    const { files } = this.tx("readonly");
    const [latest, v] = await Promise.all([request(files.get([this.name, LATEST])), request(files.get([this.name, file]))]);
    return latest && v instanceof Uint8Array ? v : undefined;
  }

  async load(): Promise<{ step: number; files: Files } | undefined> {
    const { files: s } = this.tx("readonly");
    const [keys, values] = await Promise.all([request(s.getAllKeys(this.range)), request(s.getAll(this.range))]);
    const files: Files = {};
    let step: number | undefined;
    keys.forEach((k, i) => {
      const file = String((k as [string, string])[1]);
      if (file === LATEST) step = (JSON.parse(decoder.decode(values[i] as Uint8Array)) as { step: number }).step;
      else files[file] = values[i] as Uint8Array;
    });
    return step === undefined ? undefined : { step, files };
  }

  async clear(): Promise<void> {
    const { tx, files } = this.tx("readwrite");
    files.delete(this.range);
    await done(tx);
  }
}

const IDB_STORE = "files";

async function openIdb(name: string): Promise<IdbStore> {
  const r = indexedDB.open("webtune-checkpoints", 1);
  r.onupgradeneeded = () => r.result.createObjectStore(IDB_STORE);
  return new IdbStore(await request(r), name);
}

/**
 * Opens the checkpoint store `name`: "auto" takes OPFS where the browser has it, else IndexedDB,
 * else none (undefined: runs are not saved).
 */
export async function openStore(name: string, backend: StorageKind | "auto"): Promise<CheckpointStore | undefined> {
  if (backend === "none") return undefined;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name) || name.startsWith(".")) {
    throw new Error(`checkpoint store name '${name}' is invalid: use 1-64 letters, digits, '_', '-' or '.'`);
  }
  const storage = typeof navigator !== "undefined" ? navigator.storage : undefined;
  if ((backend === "auto" || backend === "opfs") && storage && typeof storage.getDirectory === "function") {
    try {
      const root = (await storage.getDirectory()) as unknown as DirHandle;
      const webtune = await root.getDirectoryHandle("webtune", { create: true });
      return new OpfsStore(await webtune.getDirectoryHandle(name, { create: true }));
    } catch (e) {
      if (backend === "opfs") throw e;
    }
  } else if (backend === "opfs") {
    throw new Error("this browser has no origin-private file system (navigator.storage.getDirectory)");
  }
  if (typeof indexedDB !== "undefined") return openIdb(name);
  if (backend === "indexeddb") throw new Error("this browser has no IndexedDB");
  return undefined;
}
