// The live status page of an s3nbd gateway, served by the admin endpoint at /. It polls
// api/status every second and keeps one card per volume up to date. A plain script: no
// framework, no build step, nothing from elsewhere. Everything shown is set with textContent,
// never innerHTML: volume names and errors come from the store.
'use strict';

(() => {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 5000;
  // The throughput chart's window: samples older than this are dropped.
  const HISTORY_MS = 5 * 60 * 1000;
  const TOKEN_KEY = 's3nbd-admin-token';
  const SVG = 'http://www.w3.org/2000/svg';
  const CHART_W = 300;
  const CHART_H = 60;

  const $ = (id) => document.getElementById(id);
  /** name -> its card's elements (newCard) and its uploadedBytes samples [{ t, bytes }] */
  const volumes = new Map();
  let lostSince = 0;

  // ---- formatting for people ----

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    // Three significant digits: 1.25 MiB, 12.5 MiB, 125 MiB.
    return `${i === 0 ? Math.round(v) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  const count = (n) => n.toLocaleString('en');
  const percent = (part, whole) => (whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : '–');
  const clock = (t) => new Date(t).toLocaleTimeString('en-GB');

  // ---- building a volume's card once ----

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /** One labelled value in the card's grid; returns the element that shows the value. */
  function stat(grid, label, field) {
    const box = el('div', 'stat');
    box.append(el('div', 'label', label));
    const value = el('div', 'value');
    value.dataset.field = field;
    box.append(value);
    grid.append(box);
    return value;
  }

  function newCard(name) {
    const card = el('article', 'volume');
    card.dataset.volume = name;
    const head = el('header');
    const title = el('h2', '', name);
    title.dataset.field = 'name';
    const lease = el('span', 'badge');
    lease.dataset.field = 'lease';
    const size = el('span', 'muted');
    size.dataset.field = 'size';
    const store = el('div', 'muted store');
    store.dataset.field = 'store';
    head.append(title, lease, size, store);

    const grid = el('div', 'grid');
    const fields = {
      lease, size, store,
      connections: stat(grid, 'Connections', 'connections'),
      dirty: stat(grid, 'Dirty data', 'dirty'),
      dirtyAge: stat(grid, 'Oldest dirty data', 'dirty-age'),
      uploads: stat(grid, 'Uploads in flight', 'uploads-in-flight'),
      uploaded: stat(grid, 'Uploaded', 'uploaded'),
      throughput: stat(grid, 'Upload rate', 'throughput'),
      reads: stat(grid, 'Reads served from', 'reads'),
      s3: stat(grid, 'S3 requests', 's3'),
      journal: stat(grid, 'Journal · cache', 'journal'),
      snapshots: stat(grid, 'Snapshots', 'snapshots'),
    };
    const hitBar = el('div', 'hitbar');
    hitBar.title = 'memory · disk · miss';
    const hitParts = ['memory', 'disk', 'miss'].map((k) => {
      const part = el('span', k);
      hitBar.append(part);
      return part;
    });
    fields.reads.after(hitBar);

    const chartBox = el('figure', 'chart');
    const chart = document.createElementNS(SVG, 'svg');
    chart.setAttribute('viewBox', `0 0 ${CHART_W} ${CHART_H}`);
    chart.setAttribute('preserveAspectRatio', 'none');
    chart.setAttribute('role', 'img');
    chart.dataset.field = 'chart';
    const area = document.createElementNS(SVG, 'polygon');
    const line = document.createElementNS(SVG, 'polyline');
    chart.append(area, line);
    const caption = el('figcaption', 'muted');
    caption.dataset.field = 'chart-caption';
    chartBox.append(chart, caption);

    card.append(head, grid, chartBox);
    return { card, fields, hitParts, chart, area, line, caption, samples: [] };
  }

  // ---- updating it on every poll ----

  /**
   * Upload rates (bytes/s) between consecutive samples, as chart points. The chart spans the
   * samples kept, up to HISTORY_MS: a page opened a minute ago shows that minute across its
   * whole width rather than as a sliver at the right edge.
   */
  function drawChart(v, now) {
    const rates = [];
    for (let i = 1; i < v.samples.length; i++) {
      const a = v.samples[i - 1];
      const b = v.samples[i];
      rates.push({ t: b.t, rate: ((b.bytes - a.bytes) * 1000) / Math.max(1, b.t - a.t) });
    }
    const max = Math.max(1, ...rates.map((r) => r.rate));
    const span = rates.length ? Math.max(1, now - rates[0].t) : HISTORY_MS;
    const xs = rates.map((r) => (CHART_W - ((now - r.t) / span) * CHART_W).toFixed(1));
    const points = rates.map((r, i) => `${xs[i]},${(CHART_H - 2 - (r.rate / max) * (CHART_H - 4)).toFixed(1)}`);
    v.line.setAttribute('points', points.join(' '));
    v.area.setAttribute('points', points.length ? `${xs[0]},${CHART_H} ${points.join(' ')} ${xs[xs.length - 1]},${CHART_H}` : '');
    v.chart.dataset.points = String(points.length);
    const peak = rates.length ? Math.max(...rates.map((r) => r.rate)) : 0;
    v.caption.textContent = rates.length
      ? `upload rate over the last ${duration(span / 1000)} · peak ${bytes(peak)}/s`
      : 'upload rate: from the next answer on';
    return rates.length ? rates[rates.length - 1].rate : 0;
  }

  function update(v, s, now) {
    const f = v.fields;
    f.lease.textContent = s.readOnly ? `read-only · lease ${s.lease}` : `lease ${s.lease}`;
    f.lease.className = `badge lease-${s.lease}`;
    f.size.textContent = `${bytes(s.size)} · ${bytes(s.extentSize)} extents · ${count(s.storedExtents)} stored`;
    f.store.textContent = s.store;
    f.connections.textContent = count(s.connections);

    const c = s.cache;
    if (c) {
      // The gateway restarted (its counter went back): the old samples mean nothing now.
      const last = v.samples[v.samples.length - 1];
      if (last && c.uploadedBytes < last.bytes) v.samples.length = 0;
      v.samples.push({ t: now, bytes: c.uploadedBytes });
      while (v.samples.length && v.samples[0].t < now - HISTORY_MS) v.samples.shift();
      f.dirty.textContent = `${bytes(c.dirtyBytes)} in ${count(c.dirtyExtents)} extents`;
      f.dirtyAge.textContent = c.dirtyBytes > 0 ? duration(c.oldestDirtySeconds) : '–';
      f.uploads.textContent = count(c.uploadsInFlight);
      f.uploaded.textContent = `${bytes(c.uploadedBytes)} in ${count(c.uploadedExtents)} extents` +
        (c.uploadFailures ? ` · ${count(c.uploadFailures)} failed` : '');
      f.uploaded.classList.toggle('bad', c.uploadFailures > 0);
      f.journal.textContent = `${bytes(c.journalBytes)} · ${count(c.cachedExtents)} of ${count(c.cacheSlots)} slots`;
    } else {
      for (const k of ['dirty', 'dirtyAge', 'uploads', 'uploaded', 'journal']) f[k].textContent = 'no write-back cache';
    }
    f.throughput.textContent = `${bytes(drawChart(v, now))}/s`;

    const r = s.reads;
    const reads = r.memory + r.disk + r.miss;
    f.reads.textContent = reads
      ? `memory ${percent(r.memory, reads)} · disk ${percent(r.disk, reads)} · miss ${percent(r.miss, reads)} (${count(reads)})`
      : 'no reads yet';
    [r.memory, r.disk, r.miss].forEach((n, i) => { v.hitParts[i].style.flexGrow = String(n); });

    f.s3.textContent = `${count(s.s3.requests)} · ${count(s.s3.errors)} errors · ${count(s.s3.retries)} retries`;
    f.s3.classList.toggle('bad', s.s3.errors > 0);

    const newest = s.snapshots[s.snapshots.length - 1];
    f.snapshots.textContent = newest
      ? `${count(s.snapshots.length)} · newest ${newest.name}, ${duration(Math.max(0, (now - Date.parse(newest.createdAt)) / 1000))} ago`
      : 'none';
  }

  function render(status, now) {
    const g = status.gateway || {};
    const uptime = g.uptimeSeconds ?? g.uptime;
    $('gateway').textContent = [
      // `s3nbd --version`'s text: "s3nbd 0.1.0 (commit abc1234)".
      g.version || '',
      typeof uptime === 'number' ? `up ${duration(uptime)}` : '',
      `${status.volumes.length} volume${status.volumes.length === 1 ? '' : 's'}`,
    ].filter(Boolean).join(' · ');
    $('updated').textContent = `updated ${clock(now)}`;

    const seen = new Set();
    for (const s of status.volumes) {
      seen.add(s.name);
      let v = volumes.get(s.name);
      if (!v) {
        v = newCard(s.name);
        volumes.set(s.name, v);
        $('volumes').append(v.card);
      }
      update(v, s, now);
    }
    // Deleted at runtime: its card goes too.
    for (const [name, v] of volumes) {
      if (!seen.has(name)) {
        v.card.remove();
        volumes.delete(name);
      }
    }

    const skipped = status.skipped || [];
    $('skipped').hidden = skipped.length === 0;
    $('skipped-list').replaceChildren(...skipped.map((s) => {
      const li = el('li');
      li.dataset.volume = s.name;
      li.append(el('strong', '', s.name), ' ', el('span', 'bad', s.error));
      return li;
    }));
  }

  // ---- the connection: polling, its loss, the token ----

  function setConnection(state, message) {
    document.body.dataset.connection = state;
    const banner = $('banner');
    banner.hidden = state !== 'lost';
    if (message) banner.textContent = message;
  }

  function lost(reason) {
    if (!lostSince) lostSince = Date.now();
    setConnection('lost', `Connection lost since ${clock(lostSince)}: ${reason}. Retrying every second…`);
  }

  function askForToken(message) {
    setConnection('token');
    $('token-message').textContent = message;
    $('token-form').hidden = false;
    $('token-input').focus();
  }

  async function poll() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    try {
      // credentials 'omit': a 401 then never brings up the browser's own password dialog; the
      // token goes in the Authorization header set here.
      const res = await fetch('api/status', { headers, credentials: 'omit', cache: 'no-store', signal: AbortSignal.timeout(TIMEOUT_MS) });
      if (res.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        // Polling stops until a token is entered.
        askForToken(token ? 'The token was not accepted; enter it again.' : "This gateway's admin endpoint needs its token.");
        return;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`);
      const status = await res.json();
      render(status, Date.now());
      lostSince = 0;
      setConnection('ok');
    } catch (err) {
      lost(err instanceof Error ? (err.name === 'TimeoutError' ? 'no answer within 5 s' : err.message) : String(err));
    }
    setTimeout(() => { void poll(); }, POLL_MS);
  }

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
    $('token-input').value = '';
    $('token-form').hidden = true;
    void poll();
  });

  void poll();
})();
