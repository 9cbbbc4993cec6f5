/* ui.js - clara-server's web page: the Ask view (a question over a collection or pasted
 * documents, the answer streamed token by token from Server-Sent Events, the memories used with
 * their scores, the timings), the Memories view (collections, a collection's memories page by
 * page, add, upload .txt/.md/.jsonl with progress, edit, delete, search) and the Server view
 * (/status polled every two seconds, a latency chart). Every text from the server is inserted
 * with textContent or as a form value, never as HTML. The API key, when the server has one, is
 * asked for once (when a call answers 401) and kept in sessionStorage, never in a URL. */
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = 'clara-api-key';
  const PAGE = 20;        // memories per page
  const BATCH = 4;        // memories per upload request: the progress bar moves between them
  const POLL_MS = 2000;   // the Server view's /status poll
  const NOTICE_MAX = 600; // characters of an error shown (a proxy's page can be megabytes)
  const state = {
    status: null, collections: [], pending: new Set(), current: null,
    cursors: [null], page: 0, searching: false, samples: [], prev: null, timer: null, ask: null,
    editing: null, // the memory open in the dialog, as the server sent it and as the form shows it
  };

  // ---- small DOM helpers (text only) ---------------------------------------------------------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function button(text, onClick, cls, label) {
    const b = el('button', cls, text);
    b.type = 'button';
    if (label) b.setAttribute('aria-label', label);
    b.addEventListener('click', onClick);
    return b;
  }
  function fact(dl, name, value) {
    dl.append(el('dt', null, name), el('dd', null, value === null || value === undefined ? '—' : value));
  }
  function clip(msg) {
    return msg && msg.length > NOTICE_MAX ? msg.slice(0, NOTICE_MAX) + '…' : msg;
  }
  function notice(msg) {
    const n = $('notice');
    n.textContent = clip(msg) || '';
    n.hidden = !msg;
  }
  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
  }
  function when(ms) { return ms ? new Date(ms).toLocaleString() : '—'; }
  function ms(v) { return typeof v === 'number' ? v.toFixed(1) + ' ms' : '—'; }

  // ---- the API: the key from sessionStorage, asked for on 401/403 ------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  function errorText(j, r) {
    if (j && typeof j.error === 'string') return j.error;
    if (j && j.error && typeof j.error.message === 'string') return j.error.message;
    return 'HTTP ' + r.status + ' ' + r.statusText;
  }
  function errorType(j) {
    if (!j) return '';
    return j.error_type || (j.error && j.error.code) || '';
  }
  let keyWait = null;
  /* What an Authorization header can carry from a browser: visible ASCII (keys are). */
  function keyUsable(k) { return /^[\x21-\x7e]+$/.test(k); }
  function askKey(refused) {
    if (keyWait) return keyWait;
    keyWait = new Promise((resolve, reject) => {
      const d = $('key-dialog');
      const input = $('key-input');
      input.value = '';
      $('key-title').textContent = refused ? 'API key refused: enter it again' : 'API key';
      const done = () => {
        const k = input.value.trim();
        if (d.returnValue === 'save' && k && !keyUsable(k)) {
          /* a browser cannot send it (fetch throws before any request): ask again at once */
          $('key-title').textContent = 'API keys are plain ASCII: check for a pasted quote or ' +
            'accented letter';
          d.returnValue = '';
          d.showModal();
          input.focus();
          return;
        }
        d.removeEventListener('close', done);
        keyWait = null;
        input.value = '';
        if (d.returnValue === 'save' && k) {
          sessionStorage.setItem(KEY, k);
          resolve();
        } else {
          reject(new ApiError(401, 'this server needs its API key'));
        }
      };
      d.returnValue = '';
      d.addEventListener('close', done);
      d.showModal();
      input.focus();
    });
    return keyWait;
  }
  async function request(method, path, body, signal) {
    for (let tries = 0; ; tries++) {
      const headers = {};
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const key = sessionStorage.getItem(KEY);
      if (key && !keyUsable(key)) { /* kept by an older page: it would fail every request */
        sessionStorage.removeItem(KEY);
        await askKey(true);
        continue;
      }
      if (key) headers.Authorization = 'Bearer ' + key;
      const r = await fetch(path, {
        method, headers, signal, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if ((r.status === 401 || r.status === 403) && tries < 3) {
        const j = await r.clone().json().catch(() => null);
        const t = errorType(j);
        if (t === 'unauthorized' || t === 'forbidden') {
          if (t === 'forbidden') sessionStorage.removeItem(KEY);
          await askKey(t === 'forbidden');
          continue;
        }
      }
      return r;
    }
  }
  async function api(method, path, body) {
    const r = await request(method, path, body);
    const j = await r.json().catch(() => null);
    if (!r.ok || !j || j.success === false) throw new ApiError(r.status, errorText(j, r));
    return j;
  }
  /* POSTs body and calls onEvent with each Server-Sent Event's JSON until [DONE]. A stream that
   * ends without it was cut off on the way (a proxy's timeout, a restart): an error, not a
   * shorter answer. */
  async function stream(path, body, onEvent, signal) {
    const r = await request('POST', path, body, signal);
    if (!r.ok) {
      const j = await r.json().catch(() => null);
      throw new ApiError(r.status, errorText(j, r));
    }
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new ApiError(0, 'the answer was cut off: the connection ended before it was complete');
      buf += value;
      let at;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const lines = buf.slice(0, at).split('\n');
        buf = buf.slice(at + 2);
        const data = lines.filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        if (data === '[DONE]') return;
        const ev = JSON.parse(data);
        if (ev.error) throw new ApiError(ev.status || 500, errorText(ev, r));
        onEvent(ev);
      }
    }
  }
  const collPath = (c) => '/v1/collections/' + encodeURIComponent(c);
  const memPath = (c, id) => collPath(c) + '/memories' + (id ? '/' + encodeURIComponent(id) : '');

  // ---- dialogs ----------------------------------------------------------------------------------
  function confirmDialog(text) {
    return new Promise((resolve) => {
      const d = $('confirm-dialog');
      $('confirm-text').textContent = text;
      d.returnValue = '';
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
      d.showModal();
      $('confirm-cancel').focus();
    });
  }
  /* Shows a memory (or a pasted document: no collection) with its text as a form value; Edit
   * makes it editable and Save replaces it (PUT). */
  async function openMemory(coll, id, docText, edit) {
    const d = $('memory-dialog');
    $('memory-error').textContent = '';
    let m = { text: docText, metadata: null };
    if (coll) {
      try {
        m = (await api('GET', memPath(coll, id))).memory;
      } catch (e) { notice(e.message); return; }
    }
    $('memory-title').textContent = coll ? 'Memory ' + id : 'Document ' + id;
    $('memory-info').textContent = coll
      ? coll + ' · ' + m.chunks + ' chunk(s) · ' + m.tokens + ' tokens · created ' + when(m.created_ms)
        + (m.updated_ms !== m.created_ms ? ' · edited ' + when(m.updated_ms) : '')
      : 'pasted document';
    $('memory-text').value = m.text;
    $('memory-meta').value = m.metadata && Object.keys(m.metadata).length ? JSON.stringify(m.metadata) : '';
    /* a text area gives its line breaks back as \n: what it shows is kept to tell an edit apart */
    state.editing = { text: m.text, shown: $('memory-text').value, meta: $('memory-meta').value };
    setEditing(false);
    $('memory-edit').hidden = !coll;
    d.dataset.coll = coll || '';
    d.dataset.id = id;
    d.showModal();
    if (edit) setEditing(true);
  }
  function setEditing(on) {
    $('memory-text').readOnly = !on;
    $('memory-meta').readOnly = !on;
    $('memory-edit').hidden = on;
    $('memory-save').hidden = !on;
    if (on) $('memory-text').focus();
  }
  /* PUTs what was edited: an unchanged text is sent as the server had it (not with the text
   * area's line breaks), unchanged metadata not at all (kept), emptied metadata as {}; nothing
   * edited, nothing sent. */
  async function saveMemory() {
    const d = $('memory-dialog');
    const was = state.editing;
    const shown = $('memory-text').value, metaShown = $('memory-meta').value;
    if (shown === was.shown && metaShown === was.meta) { d.close(); return; }
    const body = { text: shown === was.shown ? was.text : shown };
    const meta = metaShown.trim();
    if (metaShown === was.meta) {
      /* kept as it is */
    } else if (!meta) {
      body.metadata = {};
    } else {
      try {
        body.metadata = JSON.parse(meta);
      } catch (e) { body.metadata = undefined; }
      if (!body.metadata || typeof body.metadata !== 'object' || Array.isArray(body.metadata)) {
        $('memory-error').textContent = 'Metadata must be a JSON object.';
        return;
      }
    }
    $('memory-save').disabled = true;
    try {
      await api('PUT', memPath(d.dataset.coll, d.dataset.id), body);
      d.close();
      await refreshCollections();
      await loadPage();
    } catch (e) {
      $('memory-error').textContent = clip(e.message);
    } finally {
      $('memory-save').disabled = false;
    }
  }

  // ---- views ------------------------------------------------------------------------------------
  const VIEWS = ['ask', 'memories', 'server'];
  function showView() {
    const name = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'ask';
    for (const v of VIEWS) {
      $('view-' + v).hidden = v !== name;
      const a = $('nav-' + v);
      if (v === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    clearInterval(state.timer);
    state.timer = null;
    if (name === 'server') {
      pollStatus();
      state.timer = setInterval(pollStatus, POLL_MS);
    }
    if (name === 'memories' && state.current) loadPage();
  }

  // ---- Ask --------------------------------------------------------------------------------------
  function sourceChanged() {
    const docs = $('ask-src-docs').checked;
    $('ask-docs-row').hidden = !docs;
    $('ask-coll-row').hidden = docs;
  }
  function fillCollectionSelect() {
    const sel = $('ask-collection');
    const keep = sel.value;
    sel.replaceChildren();
    for (const c of state.collections) sel.append(new Option(c.name + ' (' + c.memories + ')', c.name));
    if (state.collections.some((c) => c.name === keep)) sel.value = keep;
  }
  function usedItem(label, score, text, open) {
    const li = el('li');
    li.append(button(label, open, 'link', 'Open ' + label), ' ');
    if (typeof score === 'number') li.append(el('span', 'score', 'score ' + score.toFixed(3)), ' ');
    li.append(el('span', 'muted', text.length > 140 ? text.slice(0, 140) + '…' : text));
    return li;
  }
  function showTimings(t, tokens, extra) {
    const parts = [];
    if (t.compress_ms !== undefined) parts.push('compression ' + ms(t.compress_ms));
    if (t.query_ms !== undefined) parts.push('retrieval ' + ms(t.query_ms + (t.rank_ms || 0) + (t.recompress_ms || 0)));
    if (t.prefill_ms !== undefined) parts.push('prefill ' + ms(t.prefill_ms));
    if (t.decode_ms !== undefined && tokens) {
      const rate = t.decode_ms > 0 ? (tokens / (t.decode_ms / 1000)).toFixed(1) + ' tokens/s' : '—';
      parts.push('decode ' + tokens + ' tokens in ' + ms(t.decode_ms) + ' (' + rate + ')');
    }
    if (extra) parts.push(extra);
    $('ask-timings').textContent = parts.join(' · ');
  }
  async function ask(ev) {
    ev.preventDefault();
    if (state.ask) return;
    const q = $('ask-question').value.trim();
    if (!q) return;
    const max = Math.max(1, Math.min(512, parseInt($('ask-max').value, 10) || 128));
    const useDocs = $('ask-src-docs').checked;
    const docs = $('ask-docs').value.split(/\n\s*\n/).map((s) => s.trim()).filter((s) => s);
    const coll = $('ask-collection').value;
    if (useDocs && !docs.length) { notice('Paste at least one document.'); return; }
    if (!useDocs && !coll) { notice('Choose a collection (add memories under Memories first).'); return; }
    notice('');
    const answer = $('answer');
    const text = document.createTextNode('');
    answer.replaceChildren(text);
    $('ask-timings').textContent = 'waiting for the first token…';
    $('used').replaceChildren();
    $('ask-result').hidden = false;
    const ctl = new AbortController();
    state.ask = ctl;
    $('ask-submit').disabled = true;
    $('ask-stop').hidden = false;
    const t0 = performance.now();
    let last = null, tokens = 0;
    const piece = (e) => {
      const c = e.choices && e.choices[0];
      const d = c && c.delta && c.delta.content;
      if (d) text.appendData(d);
    };
    try {
      if (useDocs) {
        const path = state.status && state.status.can_retrieve ? '/v1/retrieve' : '/v1/answer';
        await stream(path, { query: q, documents: docs, max_new_tokens: max, stream: true }, (e) => {
          piece(e);
          if (e.success) last = e;
        }, ctl.signal);
        if (last) {
          tokens = last.generated_tokens;
          const order = last.top_k || docs.map((_, i) => i);
          $('used-title').textContent = last.top_k ? 'Documents used, best first' : 'Documents used';
          for (const i of order)
            $('used').append(usedItem('document ' + (i + 1), last.scores ? last.scores[i] : null, docs[i],
              () => openMemory(null, String(i + 1), docs[i])));
        }
      } else {
        await stream('/v1/chat/completions', {
          model: 'clara', messages: [{ role: 'user', content: q }], collection: coll,
          max_tokens: max, stream: true, stream_options: { include_usage: true },
        }, (e) => {
          piece(e);
          if (e.clara) last = e.clara;
          if (e.usage) tokens = e.usage.completion_tokens;
        }, ctl.signal);
        if (last) {
          $('used-title').textContent = 'Memories used (' + (last.selection ? last.selection.method : '') + ')';
          for (const m of last.memories || [])
            $('used').append(usedItem(m.id + (m.chunk ? ' #' + m.chunk : ''), m.score, m.text,
              () => openMemory(coll, m.id)));
        }
      }
      if (last) showTimings(last.timings || {}, tokens, 'total ' + ms(performance.now() - t0));
    } catch (e) {
      if (e.name === 'AbortError') $('ask-timings').textContent = 'stopped';
      else { $('ask-timings').textContent = ''; notice(e.message); }
    } finally {
      state.ask = null;
      $('ask-submit').disabled = false;
      $('ask-stop').hidden = true;
    }
  }

  // ---- Memories ---------------------------------------------------------------------------------
  async function refreshCollections() {
    try {
      state.collections = (await api('GET', '/v1/collections')).collections;
    } catch (e) {
      notice(e.status === 404 ? 'The memory store is off on this server (--db none).' : e.message);
      state.collections = [];
    }
    for (const c of state.collections) state.pending.delete(c.name);
    fillCollectionSelect();
    const rows = $('coll-rows');
    rows.replaceChildren();
    const all = state.collections.concat([...state.pending].map((n) => ({ name: n, memories: 0, chunks: 0 })));
    for (const c of all) {
      const tr = el('tr');
      const td = el('td');
      td.append(button(c.name, () => selectCollection(c.name), 'link', 'Open collection ' + c.name));
      tr.append(td, el('td', null, c.memories), el('td', null, c.chunks));
      if (c.name === state.current) tr.setAttribute('aria-current', 'true');
      rows.append(tr);
    }
    $('coll-empty').hidden = all.length > 0;
    const cur = all.find((c) => c.name === state.current);
    if (state.current && !cur) { state.current = null; $('coll-detail').hidden = true; }
    if (cur) {
      $('coll-meta').textContent = state.pending.has(cur.name)
        ? 'New: stored when its first memory is added.'
        : cur.memories + ' memories · ' + cur.chunks + ' chunks · created ' + when(cur.created_ms);
    }
  }
  async function selectCollection(name) {
    state.current = name;
    state.cursors = [null];
    state.page = 0;
    state.searching = false;
    $('search').value = '';
    $('coll-title').textContent = name;
    $('coll-detail').hidden = false;
    $('upload-status').textContent = '';
    $('upload-progress').hidden = true;
    await refreshCollections();
    await loadPage();
  }
  function memoryItem(m) {
    const li = el('li');
    const head = el('div', 'head');
    head.append(el('span', 'id', m.id), el('span', 'muted', when(m.created_ms)),
      el('span', 'muted', m.chunks + (m.chunks === 1 ? ' chunk' : ' chunks')),
      el('span', 'muted', m.tokens + ' tokens'));
    li.append(head, el('p', 'text', m.text));
    if (m.metadata) li.append(el('p', 'meta', JSON.stringify(m.metadata)));
    const row = el('div', 'row');
    row.append(button('Open', () => openMemory(state.current, m.id), null, 'Open memory ' + m.id),
      button('Edit', () => openMemory(state.current, m.id, null, true), null, 'Edit memory ' + m.id),
      button('Delete', () => deleteMemory(m.id), 'danger', 'Delete memory ' + m.id));
    li.append(row);
    return li;
  }
  async function loadPage() {
    const coll = state.current;
    if (!coll || state.searching) return;
    const list = $('mem-list');
    $('search-status').textContent = '';
    if (state.pending.has(coll)) {
      list.replaceChildren();
      $('page-info').textContent = '';
      $('page-prev').disabled = $('page-next').disabled = true;
      return;
    }
    const after = state.cursors[state.page];
    let j;
    try {
      j = await api('GET', memPath(coll) + '?limit=' + PAGE + (after ? '&after=' + encodeURIComponent(after) : ''));
    } catch (e) { notice(e.message); return; }
    if (coll !== state.current) return;
    list.replaceChildren(...j.memories.map(memoryItem));
    state.cursors[state.page + 1] = j.next;
    $('page-info').textContent = 'page ' + (state.page + 1);
    $('page-prev').disabled = state.page === 0;
    $('page-next').disabled = !j.next;
  }
  async function deleteMemory(id) {
    if (!(await confirmDialog('Delete memory ' + id + ' from ' + state.current + '?'))) return;
    try {
      await api('DELETE', memPath(state.current, id));
      notice('');
    } catch (e) { notice(e.message); }
    await refreshCollections();
    if (state.searching) await search(); else await loadPage();
  }
  async function deleteCollection() {
    const c = state.current;
    if (!(await confirmDialog('Delete collection ' + c + ' and all its memories?'))) return;
    if (state.pending.has(c)) state.pending.delete(c);
    else {
      try { await api('DELETE', collPath(c)); } catch (e) { notice(e.message); }
    }
    state.current = null;
    $('coll-detail').hidden = true;
    await refreshCollections();
  }
  async function addMemories(items) {
    const j = await api('POST', memPath(state.current), { memories: items });
    state.pending.delete(state.current);
    return j;
  }
  async function addOne(ev) {
    ev.preventDefault();
    const text = $('add-text').value;
    if (!text.trim()) { notice('Write the memory\'s text first.'); return; }
    const m = { text };
    const id = $('add-id').value.trim();
    if (id) m.id = id;
    const meta = $('add-meta').value.trim();
    if (meta) {
      try { m.metadata = JSON.parse(meta); } catch (e) { m.metadata = null; }
      if (!m.metadata || typeof m.metadata !== 'object' || Array.isArray(m.metadata)) {
        notice('Metadata must be a JSON object.');
        return;
      }
    }
    $('add-submit').disabled = true;
    try {
      await addMemories([m]);
      notice('');
      $('add-text').value = $('add-id').value = $('add-meta').value = '';
    } catch (e) { notice(e.message); }
    $('add-submit').disabled = false;
    await refreshCollections();
    await loadPage();
  }
  /* A .jsonl line is a string or {"text", "id"?, "metadata"?} (clara memory export's lines
   * qualify); a .txt or .md file is one memory whose metadata names the file. */
  async function readUploads(files) {
    const items = [];
    for (const f of files) {
      const body = await f.text();
      if (/\.jsonl$/i.test(f.name)) {
        const lines = body.split('\n');
        for (let i = 0; i < lines.length; i++) {
          if (!lines[i].trim()) continue;
          let v;
          try { v = JSON.parse(lines[i]); } catch (e) {
            throw new Error(f.name + ' line ' + (i + 1) + ': not JSON (' + e.message + ')');
          }
          if (typeof v === 'string') v = { text: v };
          if (!v || typeof v.text !== 'string')
            throw new Error(f.name + ' line ' + (i + 1) + ': needs a string or an object with "text"');
          const m = { text: v.text };
          if (typeof v.id === 'string') m.id = v.id;
          if (v.metadata && typeof v.metadata === 'object') m.metadata = v.metadata;
          items.push(m);
        }
      } else if (/\.(txt|md)$/i.test(f.name)) {
        if (body.trim()) items.push({ text: body, metadata: { source: f.name } });
      } else {
        throw new Error(f.name + ': upload .txt, .md or .jsonl files');
      }
    }
    return items;
  }
  async function upload(ev) {
    ev.preventDefault();
    const files = [...$('upload-files').files];
    if (!files.length) { notice('Choose files to upload first.'); return; }
    const bar = $('upload-progress');
    const status = $('upload-status');
    let items;
    try { items = await readUploads(files); } catch (e) { notice(e.message); return; }
    if (!items.length) { notice('The files hold no memories.'); return; }
    notice('');
    bar.max = items.length;
    bar.value = 0;
    bar.hidden = false;
    $('upload-submit').disabled = true;
    let done = 0;
    try {
      for (; done < items.length; done += BATCH) {
        status.textContent = 'compressing ' + Math.min(done + BATCH, items.length) + ' of ' + items.length + '…';
        await addMemories(items.slice(done, done + BATCH));
        bar.value = Math.min(done + BATCH, items.length);
      }
      status.textContent = 'added ' + items.length + ' memories';
      $('upload-files').value = '';
    } catch (e) {
      status.textContent = 'stopped after ' + done + ' of ' + items.length;
      notice('Upload: ' + e.message);
    }
    $('upload-submit').disabled = false;
    await refreshCollections();
    await loadPage();
  }
  /* Within the collection: every memory's text, id and metadata, read page by page (1,000 at a
   * time, at most 20,000), matched without regard to case. */
  async function search(ev) {
    if (ev) ev.preventDefault();
    const q = $('search').value.trim().toLowerCase();
    const coll = state.current;
    if (!q) { state.searching = false; await loadPage(); return; }
    state.searching = true;
    $('search-status').textContent = 'searching…';
    const hits = [];
    let seen = 0, after = null;
    try {
      do {
        const j = await api('GET', memPath(coll) + '?limit=1000' + (after ? '&after=' + encodeURIComponent(after) : ''));
        for (const m of j.memories) {
          const hay = (m.id + '\n' + m.text + '\n' + (m.metadata ? JSON.stringify(m.metadata) : '')).toLowerCase();
          if (hay.includes(q)) hits.push(m);
        }
        seen += j.memories.length;
        after = j.next;
      } while (after && seen < 20000);
    } catch (e) { notice(e.message); return; }
    if (coll !== state.current) return;
    $('mem-list').replaceChildren(...hits.slice(0, 200).map(memoryItem));
    $('search-status').textContent = hits.length + ' of ' + seen + ' memories match'
      + (hits.length > 200 ? ' (the first 200 shown)' : '');
    $('page-info').textContent = '';
    $('page-prev').disabled = $('page-next').disabled = true;
  }

  // ---- Server -----------------------------------------------------------------------------------
  function keepAliveText(s) {
    const k = s.keep_alive_seconds;
    const rule = k < 0 ? 'never unloads' : k === 0 ? 'unloads after each request' : 'unloads after ' + k + ' s idle';
    const state = s.loading ? 'loading' : s.initialized ? 'loaded' : 'not loaded';
    let at = '';
    if (s.initialized && s.will_unload_at)
      at = ', unloads in ' + s.seconds_until_unload + ' s (' + new Date(s.will_unload_at).toLocaleTimeString() + ')';
    return state + at + ' · ' + rule;
  }
  function renderStatus(s) {
    const m = $('srv-model');
    m.replaceChildren();
    fact(m, 'Model', s.model_name + (s.demo ? ' (demo model: meaningless answers)' : ''));
    fact(m, 'File', s.model);
    fact(m, 'Type', s.model_type + ' · ' + s.subfolder + (s.can_retrieve ? ' · retrieval' : ''));
    fact(m, 'State', keepAliveText(s));
    if (s.load_error) fact(m, 'Load error', s.load_error);
    fact(m, 'Memory', bytes(s.memory.rss_bytes) + ' resident · model file ' + bytes(s.memory.model_file_bytes));
    fact(m, 'Engine', s.threads + ' threads · ' + s.isa);
    fact(m, 'Store', s.store ? s.store.backend + ' · ' + s.store.location : 'off');
    fact(m, 'Version', s.version);
    const t = $('srv-traffic');
    t.replaceChildren();
    fact(t, 'Queue depth', s.queue_depth);
    fact(t, 'Requests served', s.requests_served);
    fact(t, 'Errors', s.errors);
    fact(t, 'Average latency', ms(s.avg_latency_ms));
    fact(t, 'Model loads', s.model_loads + ' loads · ' + s.model_unloads + ' unloads');
    fact(t, 'Uptime', s.uptime_seconds + ' s');
  }
  /* One sample per poll: the average latency of the requests served since the previous poll
   * (from /status's requests_served and avg_latency_ms). */
  function addSample(s) {
    const p = state.prev;
    state.prev = s;
    if (!p) return;
    const n = s.requests_served - p.requests_served;
    const sum = s.avg_latency_ms * s.requests_served - p.avg_latency_ms * p.requests_served;
    state.samples.push({ n, ms: n > 0 ? Math.max(0, sum / n) : null });
    if (state.samples.length > 60) state.samples.shift();
  }
  function drawChart() {
    const c = $('latency-chart');
    const w = c.clientWidth || 560, h = c.clientHeight || 160, dpr = window.devicePixelRatio || 1;
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
    const g = c.getContext('2d');
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const vals = state.samples.map((x) => x.ms).filter((x) => x !== null);
    const top = Math.max(1, ...vals);
    const slot = w / 60;
    g.fillStyle = css.getPropertyValue('--accent').trim() || '#1f5fbf';
    state.samples.forEach((x, i) => {
      if (x.ms === null) return;
      const bh = Math.max(1, (x.ms / top) * (h - 24));
      g.fillRect(w - (state.samples.length - i) * slot + 1, h - bh, slot - 2, bh);
    });
    g.fillStyle = css.getPropertyValue('--muted').trim() || '#5b6470';
    g.font = '12px system-ui, sans-serif';
    g.fillText(vals.length ? 'max ' + top.toFixed(1) + ' ms' : 'no requests yet', 6, 14);
    $('latency-note').textContent = 'Each bar: the average latency of the requests served in ' + POLL_MS / 1000
      + ' s (' + state.samples.filter((x) => x.n > 0).length + ' of the last ' + state.samples.length + ' polls had some).';
  }
  async function pollStatus() {
    try {
      const s = await api('GET', '/status');
      state.status = s;
      renderStatus(s);
      addSample(s);
      drawChart();
    } catch (e) { notice(e.message); }
  }

  // ---- start --------------------------------------------------------------------------------------
  async function start() {
    $('ask-form').addEventListener('submit', ask);
    $('ask-stop').addEventListener('click', () => state.ask && state.ask.abort());
    $('ask-src-coll').addEventListener('change', sourceChanged);
    $('ask-src-docs').addEventListener('change', sourceChanged);
    $('coll-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = $('coll-name').value.trim();
      if (!name) return;
      if (!state.collections.some((c) => c.name === name)) state.pending.add(name);
      $('coll-name').value = '';
      $('add-box').open = true;
      selectCollection(name);
    });
    $('coll-delete').addEventListener('click', deleteCollection);
    $('add-form').addEventListener('submit', addOne);
    $('upload-form').addEventListener('submit', upload);
    $('search-form').addEventListener('submit', search);
    $('page-prev').addEventListener('click', () => { if (state.page > 0) { state.page--; loadPage(); } });
    $('page-next').addEventListener('click', () => { if (state.cursors[state.page + 1]) { state.page++; loadPage(); } });
    $('memory-edit').addEventListener('click', () => setEditing(true));
    $('memory-save').addEventListener('click', saveMemory);
    window.addEventListener('hashchange', showView);
    showView();
    sourceChanged();
    try {
      const s = await api('GET', '/status');
      state.status = s;
      $('model-badge').textContent = s.model_name + ' · ' + s.model_type + (s.demo ? ' · demo model' : '');
    } catch (e) { notice(e.message); }
    await refreshCollections();
    document.body.dataset.ready = '1'; // the browser test waits for this
  }
  start();
})();
