// What a gateway process holds live, asked through its V8 inspector: a full garbage collection
// (HeapProfiler.collectGarbage), then process.memoryUsage() evaluated inside it. The process
// must run with --inspect=127.0.0.1:0 (spawnGateway's nodeArgs); its "Debugger listening on"
// line gives the address. Peak RSS says how high memory went, which depends on when V8 chose
// to collect (the same 20,000 fuzz cases peaked anywhere from 380 to 449 MiB depending on the
// build, with about 22 MiB live); this says what is still referenced, which is what a leak or
// an unbounded queue grows.

export interface LiveMemory {
  /** V8's heap in use after the collection. */
  heapUsed: number;
  /** Bytes of ArrayBuffers (Buffers) still referenced after the collection. */
  arrayBuffers: number;
}

const TIMEOUT_MS = 30_000;

export function inspectorUrlIn(stderr: string): string | undefined {
  return /Debugger listening on (ws:\/\/\S+)/.exec(stderr)?.[1];
}

export class Inspector {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private readonly closed: Promise<never>;
  private readonly ws: WebSocket;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.addEventListener('message', (ev) => {
      const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } };
      const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id!);
      if (msg.error) p.reject(new Error(`inspector: ${msg.error.message}`));
      else p.resolve(msg.result);
    });
    this.closed = new Promise<never>((_, reject) => ws.addEventListener('close', () => reject(new Error('inspector: connection closed'))));
    this.closed.catch(() => undefined);
  }

  static async connect(url: string): Promise<Inspector> {
    const ws = new WebSocket(url);
    const inspector = new Inspector(ws);
    await inspector.within(new Promise((resolve) => ws.addEventListener('open', resolve, { once: true })));
    return inspector;
  }

  /** Collects garbage, then reads what is left. */
  async liveMemory(): Promise<LiveMemory> {
    await this.call('HeapProfiler.collectGarbage');
    const r = await this.call('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true }) as { result: { value: string } };
    const usage = JSON.parse(r.result.value) as NodeJS.MemoryUsage;
    return { heapUsed: usage.heapUsed, arrayBuffers: usage.arrayBuffers };
  }

  close(): void {
    this.ws.close();
  }

  private call(method: string, params: object = {}): Promise<unknown> {
    const id = this.nextId++;
    const answer = new Promise<unknown>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.ws.send(JSON.stringify({ id, method, params }));
    return this.within(answer);
  }

  private async within<T>(p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`inspector: no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS); });
    try {
      return await Promise.race([p, this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
