// A set of byte ranges [start, end) inside one extent, kept sorted and merged. The write-back
// cache uses it to know which bytes of a cached extent are current when the rest still lives
// only in the object store (a partial write into an extent it never read).

export class Ranges {
  /** Flat list: start0, end0, start1, end1, ... sorted, disjoint and not touching. */
  private bounds: number[] = [];

  static full(size: number): Ranges {
    const r = new Ranges();
    r.bounds = [0, size];
    return r;
  }

  add(start: number, end: number): void {
    if (start >= end) return;
    const out: number[] = [];
    let i = 0;
    const b = this.bounds;
    while (i < b.length && b[i + 1]! < start) {
      out.push(b[i]!, b[i + 1]!);
      i += 2;
    }
    let s = start;
    let e = end;
    while (i < b.length && b[i]! <= e) {
      s = Math.min(s, b[i]!);
      e = Math.max(e, b[i + 1]!);
      i += 2;
    }
    out.push(s, e);
    while (i < b.length) out.push(b[i++]!);
    this.bounds = out;
  }

  covers(start: number, end: number): boolean {
    const b = this.bounds;
    for (let i = 0; i < b.length; i += 2) if (b[i]! <= start && end <= b[i + 1]!) return true;
    return start >= end;
  }

  /** How many disjoint ranges the set has. */
  get runs(): number {
    return this.bounds.length / 2;
  }

  isEmpty(): boolean {
    return this.bounds.length === 0;
  }

  /** The ranges in the set, in order. */
  list(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 0; i < this.bounds.length; i += 2) out.push([this.bounds[i]!, this.bounds[i + 1]!]);
    return out;
  }

  /** The gaps of [0, size) not in the set. */
  gaps(size: number): Array<[number, number]> {
    const gaps: Array<[number, number]> = [];
    let pos = 0;
    for (let i = 0; i < this.bounds.length; i += 2) {
      if (this.bounds[i]! > pos) gaps.push([pos, this.bounds[i]!]);
      pos = this.bounds[i + 1]!;
    }
    if (pos < size) gaps.push([pos, size]);
    return gaps;
  }
}
