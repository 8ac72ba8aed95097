// Which objects of each extent are in the bucket (docs/format.md): the current one (the
// highest generation, data or tombstone) and the others, older generations that a snapshot
// keeps or that are garbage not yet deleted, and uploads that failed but may have landed.
// Learnt by listing the store at open, then kept up to date by the extent layer as it puts
// and deletes. Memory: a map entry per extent that has more than nothing.

import { AllocationMap } from './allocation-map.ts';
import { type ExtentObjectName, extentKey } from './extent-keys.ts';
import { epochOf } from './generations.ts';

/** An object other than the current one; `uncertain`: an upload that failed but may have landed. */
interface Other extends ExtentObjectName {
  readonly uncertain?: boolean;
}

export function keyOf(name: ExtentObjectName): string {
  return extentKey(name.index, name.generation, name.zero);
}

export class ObjectCensus {
  /** Extents whose current object holds data (not a tombstone). */
  readonly stored: AllocationMap;
  private readonly currents = new Map<number, ExtentObjectName>();
  private readonly olders = new Map<number, Other[]>();
  /** The highest epoch of any object seen: the next writer's must be above it. */
  maxEpoch = 0;

  constructor(extentCount: number) {
    this.stored = new AllocationMap(extentCount);
  }

  /** The volume grew to `extentCount` extents: the new ones have no objects yet. */
  grow(extentCount: number): void {
    this.stored.grow(extentCount);
  }

  current(index: number): ExtentObjectName | undefined {
    return this.currents.get(index);
  }

  /** The extent's objects other than the current one (possibly none). */
  others(index: number): readonly Other[] {
    return this.olders.get(index) ?? [];
  }

  /** Extents that have objects other than their current one, or a tombstone as current: where garbage may be. */
  mayHaveGarbage(): number[] {
    const indexes = new Set(this.olders.keys());
    for (const [index, current] of this.currents) if (current.zero) indexes.add(index);
    return [...indexes];
  }

  /** An object found in the bucket by a listing. Known ones are ignored. */
  add(name: ExtentObjectName): void {
    this.maxEpoch = Math.max(this.maxEpoch, epochOf(name.generation));
    if (this.knows(name)) return;
    const now = this.currents.get(name.index);
    if (!now || name.generation > now.generation) {
      this.setCurrent(name);
      if (now) this.addOther(now);
    } else {
      this.addOther(name);
    }
  }

  /**
   * An upload that failed but may have landed. It never serves reads, but until it is deleted
   * or superseded the extent counts as stored: making the extent zeros must then write a
   * tombstone above it, or the object could come back as the extent's content at the next start.
   */
  addUncertain(name: ExtentObjectName): void {
    if (this.knows(name)) return;
    this.addOther({ ...name, uncertain: true });
    this.updateStored(name.index);
  }

  private knows(name: ExtentObjectName): boolean {
    return this.currents.get(name.index)?.generation === name.generation
      || this.others(name.index).some((o) => o.generation === name.generation);
  }

  /**
   * A put of `name` succeeded: it is the current object now, and the one it replaces an other;
   * unless it is older than the current one, or a snapshot's copy (`copy`), which never is.
   */
  putDone(name: ExtentObjectName, copy = false): void {
    this.removeOther(name.index, name.generation); // an earlier failed attempt may have listed it
    const now = this.currents.get(name.index);
    if (copy || (now && now.generation > name.generation)) {
      this.addOther(name);
    } else {
      this.setCurrent(name);
      if (now) this.addOther(now);
    }
    this.updateStored(name.index);
  }

  /** Every extent's current data object's generation. */
  currentData(): Map<number, number> {
    const refs = new Map<number, number>();
    for (const [index, name] of this.currents) if (!name.zero) refs.set(index, name.generation);
    return refs;
  }

  /** The object is gone from the bucket (deleted by us, or found missing). */
  remove(name: ExtentObjectName): void {
    if (this.currents.get(name.index)?.generation === name.generation) {
      this.currents.delete(name.index);
    } else {
      this.removeOther(name.index, name.generation);
    }
    this.updateStored(name.index);
  }

  private setCurrent(name: ExtentObjectName): void {
    this.currents.set(name.index, name);
    this.updateStored(name.index);
  }

  /** Stored: the current object holds data, or an upload above it may have landed. */
  private updateStored(index: number): void {
    const current = this.currents.get(index);
    const above = this.others(index).some((o) => o.uncertain === true && o.generation > (current?.generation ?? -1));
    if ((current !== undefined && !current.zero) || above) this.stored.set(index);
    else this.stored.clear(index);
  }

  private addOther(name: Other): void {
    const list = this.olders.get(name.index);
    if (list) list.push(name);
    else this.olders.set(name.index, [name]);
  }

  private removeOther(index: number, generation: number): void {
    const list = this.olders.get(index);
    if (!list) return;
    const rest = list.filter((o) => o.generation !== generation);
    if (rest.length === 0) this.olders.delete(index);
    else if (rest.length !== list.length) this.olders.set(index, rest);
  }
}
