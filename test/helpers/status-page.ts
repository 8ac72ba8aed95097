// Reading the status page (src/service/status-page/) as a person would see it, from a page open
// in Chromium: the shown text of each volume's card, keyed by the data-field names status.js
// gives them, the chart's point count, the skipped volumes, the connection state.

import type { Page } from 'puppeteer-core';

export interface ShownVolume {
  readonly name: string;
  /** The text of each field: connections, dirty, dirty-age, uploads-in-flight, uploaded, throughput, reads, s3, journal, snapshots, lease, size, store. */
  readonly fields: Readonly<Record<string, string>>;
  readonly chartPoints: number;
}

export interface ShownPage {
  /** ok, lost or token (body's data-connection); empty before the first answer. */
  readonly connection: string;
  readonly gateway: string;
  readonly banner: string | null;
  readonly tokenForm: { readonly visible: boolean; readonly message: string };
  readonly volumes: readonly ShownVolume[];
  readonly skipped: ReadonlyArray<{ readonly name: string; readonly text: string }>;
}

// Runs in the page, as a string: the project's TypeScript has no DOM types.
const READ_PAGE = `(() => {
  const visible = (e) => e !== null && !e.hidden;
  const text = (e) => (e && e.textContent) || '';
  const banner = document.getElementById('banner');
  return {
    connection: document.body.dataset.connection || '',
    gateway: text(document.getElementById('gateway')),
    banner: visible(banner) ? text(banner) : null,
    tokenForm: { visible: visible(document.getElementById('token-form')), message: text(document.getElementById('token-message')) },
    volumes: [...document.querySelectorAll('#volumes [data-volume]')].map((card) => ({
      name: card.dataset.volume,
      fields: Object.fromEntries([...card.querySelectorAll('[data-field]')].map((f) => [f.dataset.field, text(f)])),
      chartPoints: Number(card.querySelector('svg[data-field="chart"]').dataset.points || 0),
    })),
    skipped: visible(document.getElementById('skipped'))
      ? [...document.querySelectorAll('#skipped-list [data-volume]')].map((li) => ({ name: li.dataset.volume, text: text(li) }))
      : [],
  };
})()`;

export function shownPage(page: Page): Promise<ShownPage> {
  return page.evaluate(READ_PAGE) as Promise<ShownPage>;
}

/** Waits (on real time, generously: the machine is loaded) until what the page shows passes `check`; fails with the last state seen. */
export async function untilShown(page: Page, what: string, check: (shown: ShownPage) => boolean, ms = 60_000): Promise<ShownPage> {
  let last: ShownPage | undefined;
  for (const deadline = Date.now() + ms; Date.now() < deadline;) {
    last = await shownPage(page);
    if (check(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting until the status page shows ${what}; it shows:\n${JSON.stringify(last, null, 2)}`);
}
