// eventsd's status page (ui.md): polls GET /status every 2 s and draws it; silences a
// key from a firing and expires a silence through the same API a script would use.
//
// Every string that came from a client (event types, watcher names, key values, errors
// of targets) is inserted as text: nodes are built with createElement and filled with
// textContent, never with innerHTML. No inline script or style (the CSP forbids them).
// With server.api_token set, the token lives in sessionStorage and goes out as
// `Authorization: Bearer`; nothing is shown until /status accepts it.
'use strict';

(() => {
  const POLL_MS = 2000;
  const TOKEN_KEY = 'eventsd.api_token';
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let lastUpdate = null;
  let downSince = null;

  // ---- building nodes, as text only ----

  /** An element with a class (optional) and children: strings become text nodes. */
  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function row(...cells) {
    return el('tr', null, ...cells.map((cell) => (cell instanceof Node && cell.tagName === 'TD' ? cell : el('td', null, cell))));
  }

  /** A word for a state, coloured by its class: never a colour alone. */
  function badge(word, kind) {
    const node = el('span', 'badge ' + kind, word);
    node.dataset.state = word;
    return node;
  }

  // ---- formatting ----

  function duration(secs) {
    secs = Math.max(0, Math.floor(secs));
    const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60), s = secs % 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + s + 's';
    return s + 's';
  }

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }

  function attempts(n) {
    return n + (n === 1 ? ' attempt' : ' attempts');
  }

  function when(text) {
    if (!text) return '—';
    const date = new Date(text);
    return isNaN(date) ? String(text) : date.toLocaleString([], { hour12: false });
  }

  /** A firing's key as `field=value, …` (`—` for a `single` watcher). */
  function keyText(key) {
    if (key === null || key === undefined) return '—';
    if (typeof key !== 'object') return String(key);
    return Object.entries(key).map(([f, v]) => f + '=' + (typeof v === 'string' ? v : JSON.stringify(v))).join(', ');
  }

  // ---- talking to the daemon ----

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    return headers;
  }

  /** A change (silences): JSON in, the daemon's message out on a refusal. */
  async function change(method, path, body) {
    const init = { method, headers: authHeaders(body ? { 'Content-Type': 'application/json' } : {}) };
    if (body) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    if (response.status === 401) { askForToken('The token was refused; give it again.'); }
    if (!response.ok) {
      let message = 'HTTP ' + response.status;
      try { message = (await response.json()).message || message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response.json().catch(() => ({}));
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const response = await fetch('/status', { headers: authHeaders(), cache: 'no-store' });
      if (response.status === 401) {
        askForToken(sessionStorage.getItem(TOKEN_KEY) ? 'The token was refused.' : '');
        return; // no polling without a token: it comes back with one
      }
      if (!response.ok) throw new Error('HTTP ' + response.status);
      const status = await response.json();
      showBoard();
      render(status);
      answering();
    } catch (error) {
      notAnswering(error);
    }
    // Polls that overlapped (a change asks for one at once) leave a single timer.
    clearTimeout(timer);
    timer = setTimeout(poll, POLL_MS);
  }

  function answering() {
    lastUpdate = new Date();
    downSince = null;
    const connection = $('connection');
    connection.dataset.state = 'live';
    connection.textContent = 'Live: updated ' + clock(lastUpdate) + ', every ' + POLL_MS / 1000 + ' s';
    document.body.classList.remove('stale');
  }

  function notAnswering(error) {
    downSince = downSince || new Date();
    const connection = $('connection');
    connection.dataset.state = 'down';
    let text = 'Not answering since ' + clock(downSince);
    if (lastUpdate) text += '; last update ' + clock(lastUpdate) + ', shown greyed';
    connection.textContent = text + ' (' + (error && error.message ? error.message : error) + ')';
    document.body.classList.add('stale');
  }

  // ---- the token shell ----

  function askForToken(message) {
    clearTimeout(timer);
    const board = $('board');
    board.hidden = true;
    for (const tbody of board.querySelectorAll('tbody')) tbody.replaceChildren();
    for (const id of ['daemon', 'traffic', 'watchers', 'rejected']) $(id).replaceChildren();
    drawn = {};
    $('token-form').hidden = false;
    $('token-error').textContent = message || '';
    const connection = $('connection');
    connection.dataset.state = 'locked';
    connection.textContent = 'Locked: the API token is needed';
  }

  function showBoard() {
    $('token-form').hidden = true;
    $('board').hidden = false;
  }

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value);
    $('token').value = '';
    poll();
  });

  // ---- drawing ----

  /** What each section last drew, as JSON: a section is redrawn only when it changed,
   *  so a button under the pointer, a selection or the focus survive the next poll. */
  let drawn = {};

  function section(name, data, draw) {
    const text = JSON.stringify(data);
    if (drawn[name] === text) return;
    drawn[name] = text;
    draw();
  }

  function render(status) {
    // Redrawing changes heights for a moment: the reader stays where they were.
    const x = window.scrollX, y = window.scrollY;
    renderDaemon(status.daemon || {}, status.cluster);
    section('workers', status.workers, () => renderWorkers(status.workers || []));
    section('traffic', status.traffic, () => renderTraffic(status.traffic || {}));
    section('watchers', status.watchers, () => renderWatchers(status.watchers || []));
    section('pending', status.pending, () => renderPending(status.pending || []));
    section('firings', status.firings, () => renderFirings(status.firings || []));
    section('silences', status.silences, () => renderSilences(status.silences || []));
    window.scrollTo(x, y);
  }

  function renderDaemon(daemon, cluster) {
    const facts = [
      ['Version', daemon.version + (daemon.commit ? ' (commit ' + daemon.commit + ')' : '')],
      ['Mode', daemon.mode],
      ['Master PID', daemon.pid],
      ['Up', duration(daemon.uptime_secs)],
      ['Listening on', daemon.listen],
      ['Config', daemon.config],
      ['Generation', daemon.generation],
      ['Reloads', daemon.reloads + (daemon.reload_in_progress ? ' (one rolling now)' : '')],
      ['Last reload error', daemon.last_reload_error || 'none'],
      ['Upgrade', daemon.upgrade_in_progress ? 'under way' : 'none under way'],
      ['Last upgrade error', daemon.last_upgrade_error || 'none'],
      ['Pool', daemon.target_workers + ' workers (min ' + daemon.min_workers + ', max ' + daemon.max_workers + ')'],
    ];
    if (daemon.crash_loop) facts.push(['Crash loop', daemon.crash_loop.quick_exits + ' quick exits; last: ' + daemon.crash_loop.last_exit]);
    if (cluster) facts.push(['Node', cluster.node], ['Redis', cluster.redis_reachable ? 'reachable' : 'unreachable: counting alone (degraded)']);
    $('daemon').replaceChildren(...facts.map(([term, value]) => el('div', null, el('dt', null, term), el('dd', null, value === undefined ? '—' : value))));
  }

  const WORKER_STATES = { init: ['starting', 'warn'], idle: ['idle', 'ok'], busy: ['busy', 'warn'], shutdown: ['draining', 'muted'] };

  function renderWorkers(workers) {
    const rows = workers.map((w) => {
      const [word, kind] = WORKER_STATES[w.state] || [w.state, 'muted'];
      const tr = row(w.slot, w.pid, w.generation, el('td', null, badge(word, kind)), w.requests, w.connections,
        bytes(w.rss_bytes), (w.cpu_seconds || 0).toFixed(1) + ' s', duration(w.uptime_secs));
      tr.dataset.pid = w.pid;
      tr.dataset.slot = w.slot;
      return tr;
    });
    $('workers').tBodies[0].replaceChildren(...rows);
  }

  /** A sparkline of a per-second series, drawn by this script (SVG, no library). */
  function sparkline(series, label) {
    const width = 300, height = 40;
    const max = Math.max(1, ...series);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
    const title = document.createElementNS(SVG, 'title');
    title.textContent = label;
    const line = document.createElementNS(SVG, 'polyline');
    const offset = width - series.length;
    line.setAttribute('points', series.map((n, i) => (offset + i) + ',' + (height - 1 - (n / max) * (height - 2)).toFixed(1)).join(' '));
    svg.append(title, line);
    return svg;
  }

  function renderTraffic(traffic) {
    const events = traffic.events || {};
    const cards = Object.entries(events).map(([type, series]) => {
      const now = series.length ? series[series.length - 1] : 0;
      const total = series.reduce((a, b) => a + b, 0);
      const label = type + ': ' + now + ' events/s now, ' + total + ' in the last ' + duration(series.length);
      const card = el('figure', 'card traffic', el('figcaption', null, el('strong', null, type), ' ', now + '/s now, ' + total + ' in 5 min'), sparkline(series, label));
      card.dataset.type = type;
      return card;
    });
    $('traffic').replaceChildren(...(cards.length ? cards : [el('p', 'muted', 'No event type registered.')]));
    const rejected = Object.entries(traffic.rejected || {}).map(([code, series]) => code + ': ' + series.reduce((a, b) => a + b, 0));
    $('rejected').textContent = rejected.length ? rejected.join(', ') : 'none';
  }

  function keyBar(key, count, threshold) {
    const level = count > threshold ? ['over the threshold', 'bad'] : count >= 0.8 * threshold ? ['near the threshold', 'warn'] : ['below the threshold', 'ok'];
    const meter = el('meter');
    meter.min = 0;
    meter.max = threshold;
    meter.value = Math.min(count, threshold);
    meter.title = count + ' of ' + threshold;
    const li = el('li', 'bar ' + level[1], el('span', 'key', keyText(key)), meter, el('span', 'figure', count + ' / ' + threshold + ' — ' + level[0]));
    li.dataset.count = count;
    return li;
  }

  function renderWatchers(watchers) {
    const cards = watchers.map((w) => {
      const bars = w.keys.map((k) => keyBar(k.key, k.count, w.threshold));
      const last = w.last_firing;
      const card = el('article', 'card watcher',
        el('h3', null, w.event + ' / ' + w.watcher),
        el('p', 'rule', w.description),
        el('p', 'muted', w.keys_held + ' keys held; last fired: ' + (last ? when(last.fired_at) + ' (' + last.state + ')' : 'never')),
        bars.length ? el('ol', 'bars', ...bars) : el('p', 'muted', 'No events in the window.'));
      card.dataset.event = w.event;
      card.dataset.watcher = w.watcher;
      return card;
    });
    $('watchers').replaceChildren(...(cards.length ? cards : [el('p', 'muted', 'No watcher registered.')]));
  }

  function renderPending(pending) {
    const rows = pending.map((p) => row(p.target, p.firings, p.attempts, p.last_error || '—', when(p.next_attempt_at)));
    $('pending').tBodies[0].replaceChildren(...(rows.length ? rows : [row('nothing waiting', '', '', '', '')]));
  }

  const FIRING_STATES = { pending: 'warn', delivered: 'ok', dropped: 'bad', silenced: 'muted' };

  function renderFirings(firings) {
    const rows = firings.map((f) => {
      const action = el('td');
      if (f.state !== 'silenced') {
        const button = el('button', 'small', 'Silence 2 h…');
        button.type = 'button';
        button.addEventListener('click', () => openSilenceForm(f));
        action.append(button);
      }
      let detail = '';
      if (f.state === 'pending') detail = 'to ' + f.target + ', ' + attempts(f.attempts) + (f.last_error ? ': ' + f.last_error : '');
      if (f.state === 'delivered') detail = 'after ' + attempts(f.attempts);
      if (f.state === 'dropped') detail = f.reason.replace(/_/g, ' ') + (f.error ? ': ' + f.error : '');
      if (f.state === 'silenced') detail = 'by silence ' + f.silenced_by;
      const tr = row(when(f.fired_at), f.event, f.watcher, keyText(f.key), f.count + ' / ' + f.threshold,
        el('td', null, badge(f.state, FIRING_STATES[f.state] || 'muted'), ' ', detail), action);
      tr.dataset.id = f.id;
      tr.dataset.state = f.state;
      return tr;
    });
    $('firings').tBodies[0].replaceChildren(...(rows.length ? rows : [row('no firing yet', '', '', '', '', '', '')]));
  }

  function matcherText(m) {
    return m.name + (m.isEqual === false ? ' != ' : ' = ') + (m.isRegex ? '~' : '') + m.value;
  }

  function renderSilences(silences) {
    const rows = silences.map((s) => {
      const state = (s.status && s.status.state) || s.state || 'active';
      const cell = el('td');
      if (state !== 'expired') {
        const button = el('button', 'small', 'Expire');
        button.type = 'button';
        button.addEventListener('click', () => expire(s.id));
        cell.append(button);
      }
      const tr = row(el('td', null, badge(state, state === 'active' ? 'ok' : 'muted')), (s.matchers || []).map(matcherText).join(', '),
        when(s.endsAt), s.createdBy || '', s.comment || '', cell);
      tr.dataset.id = s.id;
      return tr;
    });
    $('silences').tBodies[0].replaceChildren(...(rows.length ? rows : [row('no silence', '', '', '', '', '')]));
  }

  // ---- silences ----

  /** The form, prefilled from a firing: its type, watcher and key, for 2 hours. */
  function openSilenceForm(firing) {
    const matchers = [{ name: 'event', value: firing.event }, { name: 'watcher', value: firing.watcher }];
    if (firing.key && typeof firing.key === 'object') {
      for (const [field, value] of Object.entries(firing.key)) {
        matchers.push({ name: 'key.' + field, value: typeof value === 'string' ? value : JSON.stringify(value) });
      }
    }
    const fieldset = $('silence-matchers');
    fieldset.replaceChildren(el('legend', null, 'Matchers'), ...matchers.map((m, i) => {
      const box = el('input');
      box.type = 'checkbox';
      box.checked = true;
      box.id = 'matcher-' + i;
      box.dataset.name = m.name;
      box.dataset.value = m.value;
      const label = el('label', 'check', box, ' ', matcherText(m));
      return label;
    }));
    $('silence-hours').value = '2';
    $('silence-comment').value = 'silenced from the status page: ' + firing.event + ' / ' + firing.watcher + ' ' + keyText(firing.key);
    $('silence-error').textContent = '';
    $('silence-dialog').showModal();
  }

  $('silence-cancel').addEventListener('click', () => $('silence-dialog').close());

  $('silence-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const matchers = [...$('silence-matchers').querySelectorAll('input:checked')]
      .map((box) => ({ name: box.dataset.name, value: box.dataset.value, isRegex: false, isEqual: true }));
    const hours = Number($('silence-hours').value);
    const body = {
      matchers,
      startsAt: new Date().toISOString(),
      endsAt: new Date(Date.now() + hours * 3600 * 1000).toISOString(),
      createdBy: $('silence-by').value,
      comment: $('silence-comment').value,
    };
    try {
      await change('POST', '/silences', body);
      $('silence-dialog').close();
      poll();
    } catch (error) {
      $('silence-error').textContent = 'Not silenced: ' + error.message;
    }
  });

  async function expire(id) {
    $('action-error').textContent = '';
    try {
      await change('DELETE', '/silences/' + encodeURIComponent(id));
      poll();
    } catch (error) {
      $('action-error').textContent = 'Not expired: ' + error.message;
    }
  }

  poll();
})();
