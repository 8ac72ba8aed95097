// The extent objects that snapshots keep (docs/format.md): an older generation is garbage only
// when no snapshot refers to it. Counted per object, as several snapshots may share one; a
// snapshot being taken counts too, from the moment it reserves its objects.

export class RetainedObjects {
  private readonly counts = new Map<number, Map<number, number>>();

  has(index: number, generation: number): boolean {
    return (this.counts.get(index)?.get(generation) ?? 0) > 0;
  }

  add(index: number, generation: number): void {
    let gens = this.counts.get(index);
    if (!gens) this.counts.set(index, gens = new Map<number, number>());
    gens.set(generation, (gens.get(generation) ?? 0) + 1);
  }

  /** Undoes one add(); returns true when nothing keeps the object any more. */
  release(index: number, generation: number): boolean {
    const gens = this.counts.get(index);
    const n = gens?.get(generation) ?? 0;
    if (!gens || n === 0) return true;
    if (n > 1) {
      gens.set(generation, n - 1);
      return false;
    }
    gens.delete(generation);
    if (gens.size === 0) this.counts.delete(index);
    return true;
  }
}
