// Which snapshots a retention policy keeps: the rules of restic's `forget`, which backup users
// know (https://restic.readthedocs.io/en/stable/060_forget.html):
//
//   last N     the N most recent snapshots
//   hourly N   for each of the last N hours that have a snapshot, the most recent one in it;
//   daily N    the same per day, weekly N per ISO week (Monday to Sunday), monthly N per month
//
// A snapshot kept by any rule is kept, with every rule that keeps it as its reasons; the others
// are forgotten. As in restic, the periods are counted over the snapshots there are, newest
// first, not over the calendar: "hourly 24" keeps 24 snapshots in 24 different hours, however
// far back they go. Periods are UTC (a snapshot's createdAt is UTC; restic uses local time).
// Snapshots created in the same second are ordered by name, the later name the more recent.
// A policy with every count 0 keeps nothing; callers refuse it (S3NBD_NO_RETENTION_POLICY)
// rather than delete every snapshot.

export interface RetentionPolicy {
  readonly last?: number | undefined;
  readonly hourly?: number | undefined;
  readonly daily?: number | undefined;
  readonly weekly?: number | undefined;
  readonly monthly?: number | undefined;
}

export interface DatedSnapshot {
  readonly name: string;
  /** ISO 8601, as in the manifest. */
  readonly createdAt: string;
}

export interface RetentionDecision {
  readonly name: string;
  readonly createdAt: string;
  readonly keep: boolean;
  /** The rules that keep it, e.g. "last 1", "daily 2026-12-06"; empty when forgotten. */
  readonly reasons: readonly string[];
}

type Rule = 'hourly' | 'daily' | 'weekly' | 'monthly';

/** The period a time falls in, for each rule: equal strings, same period. */
const PERIOD: Record<Rule, (t: Date) => string> = {
  hourly: (t) => t.toISOString().slice(0, 13),
  daily: (t) => t.toISOString().slice(0, 10),
  weekly: isoWeek,
  monthly: (t) => t.toISOString().slice(0, 7),
};

/** True when the policy keeps anything at all. */
export function hasRules(policy: RetentionPolicy): boolean {
  return [policy.last, policy.hourly, policy.daily, policy.weekly, policy.monthly].some((n) => (n ?? 0) > 0);
}

/** Decides for every snapshot, newest first. */
export function applyRetention(snapshots: readonly DatedSnapshot[], policy: RetentionPolicy): RetentionDecision[] {
  const newestFirst = [...snapshots].sort((a, b) => timeOf(b) - timeOf(a) || (a.name < b.name ? 1 : a.name > b.name ? -1 : 0));
  const left: Record<Rule, number> = { hourly: policy.hourly ?? 0, daily: policy.daily ?? 0, weekly: policy.weekly ?? 0, monthly: policy.monthly ?? 0 };
  const lastPeriod: Partial<Record<Rule, string>> = {};
  return newestFirst.map((s, position) => {
    const reasons: string[] = [];
    if (position < (policy.last ?? 0)) reasons.push(`last ${position + 1}`);
    const time = new Date(timeOf(s));
    for (const rule of Object.keys(PERIOD) as Rule[]) {
      if (left[rule] <= 0) continue;
      const period = PERIOD[rule](time);
      if (period === lastPeriod[rule]) continue;
      lastPeriod[rule] = period;
      left[rule]--;
      reasons.push(`${rule} ${period}`);
    }
    return { name: s.name, createdAt: s.createdAt, keep: reasons.length > 0, reasons };
  });
}

function timeOf(s: DatedSnapshot): number {
  const t = Date.parse(s.createdAt);
  if (Number.isNaN(t)) throw new Error(`snapshot ${s.name}: createdAt "${s.createdAt}" is not a time`);
  return t;
}

/** "2026-W49": the ISO 8601 week (weeks start on Monday; week 1 holds the year's first Thursday). */
function isoWeek(t: Date): string {
  const day = (t.getUTCDay() + 6) % 7; // Monday 0 … Sunday 6
  const thursday = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate() - day + 3));
  const year = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * 86_400_000));
  return `${year}-W${String(week).padStart(2, '0')}`;
}
