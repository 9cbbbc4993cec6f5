// ui_browser.cjs - drives clara-server's web page in Debian's chromium (headless, through the
// DevTools protocol with the pinned npm package puppeteer-core: no browser is downloaded) for
// tests/e2e/test_ui.py. It does what a person would do and records what the page shows; the
// Python suite checks those observations against the HTTP API. Usage:
//   node ui_browser.cjs PUPPETEER_DIR < config.json > observations.json
// config: {chromium, base, scenario: "main" | "stream" | "key" | "edits" | "cut", shots, jsonl,
//          key, question}
'use strict';
const path = require('path');
const fs = require('fs');

const DESKTOP = { width: 1280, height: 800 };
// the phone's width and height (isMobile would make puppeteer reload the page, losing its state)
const PHONE = { width: 375, height: 812 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Everything the page did that a test must see: console messages, uncaught errors, dialogs
// (alert/confirm/prompt), requests with their headers, and the bytes of the first load.
function watch(page, obs) {
  page.on('console', (m) => obs.console.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => obs.pageErrors.push(String(e)));
  page.on('dialog', async (d) => {
    obs.dialogs.push({ type: d.type(), message: d.message() });
    await d.dismiss();
  });
  page.on('request', (r) => obs.requests.push({ url: r.url(), method: r.method(),
    auth: r.headers().authorization || null }));
  page.on('requestfailed', (r) => obs.failed.push({ url: r.url(), error: r.failure() && r.failure().errorText }));
}

async function ready(page) {
  await page.waitForFunction(() => document.body.dataset.ready === '1', { timeout: 30000 });
}

async function shot(page, obs, dir, name) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.setViewport(DESKTOP);
  await sleep(150);
  await page.screenshot({ path: path.join(dir, name + '-desktop.png') });
  await page.setViewport(PHONE);
  await sleep(250);
  obs.phoneOverflow[name] = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.screenshot({ path: path.join(dir, name + '-phone.png') });
  await page.setViewport(DESKTOP);
  await sleep(150);
}

const texts = (page, sel) => page.$$eval(sel, (es) => es.map((e) => e.textContent));

// The memories of the open collection as the page lists them, every page (Next until disabled).
async function allListed(page) {
  const out = [];
  for (let i = 0; i < 50; i++) {
    await page.waitForFunction(() => document.getElementById('page-info').textContent !== '', { timeout: 10000 });
    const ids = await texts(page, '#mem-list li .id');
    const body = await texts(page, '#mem-list li .text');
    ids.forEach((id, k) => out.push({ id, text: body[k] }));
    if (await page.$eval('#page-next', (b) => b.disabled)) break;
    const before = await page.$eval('#page-info', (e) => e.textContent);
    await page.click('#page-next');
    await page.waitForFunction((b) => document.getElementById('page-info').textContent !== b, {}, before);
  }
  return out;
}

// A nav link changes the hash; the view is shown when the page handles the hashchange event,
// a task later: typing or clicking into it before then reaches a hidden element (a collection
// created with an empty name once, on a loaded CI machine).
async function gotoView(page, name) {
  await page.click('#nav-' + name);
  await page.waitForSelector('#view-' + name, { visible: true });
}

async function openCollection(page, name) {
  await gotoView(page, 'memories');
  const btn = `#coll-rows button[aria-label="Open collection ${name}"]`;
  await page.waitForSelector(btn);
  await page.$eval('#page-info', (e) => { e.textContent = ''; }); // so the wait sees the new page
  await page.click(btn);
  await page.waitForFunction((n) => document.getElementById('coll-title').textContent === n &&
    document.getElementById('page-info').textContent === 'page 1', {}, name);
}

// Records the answer's text at every mutation, with the time, until the answer is complete.
async function watchAnswer(page) {
  await page.evaluate(() => {
    window.__states = [];
    const a = document.getElementById('answer');
    new MutationObserver(() => window.__states.push({ t: performance.now(), text: a.textContent }))
      .observe(a, { childList: true, characterData: true, subtree: true });
  });
}

async function scenarioMain(browser, cfg, obs) {
  const page = await browser.newPage();
  watch(page, obs);
  await page.setViewport(DESKTOP);
  const loaded = [];
  const onResponse = async (r) => {
    const t = r.request().resourceType();
    if (['document', 'stylesheet', 'script'].includes(t))
      loaded.push({ url: r.url(), type: t, status: r.status(), bytes: (await r.buffer()).length,
        headers: r.headers() });
  };
  page.on('response', onResponse);
  await page.goto(cfg.base + '/', { waitUntil: 'networkidle0' });
  await ready(page);
  page.off('response', onResponse);
  obs.load = loaded;

  // Memories: create a collection, upload the .jsonl, watch the progress bar
  await gotoView(page, 'memories');
  await page.type('#coll-name', 'notes');
  await page.click('#coll-create');
  await page.waitForFunction(() => document.getElementById('coll-title').textContent === 'notes');
  await page.evaluate(() => {
    window.__progress = [];
    const bar = document.getElementById('upload-progress');
    new MutationObserver(() => window.__progress.push(Number(bar.value)))
      .observe(bar, { attributes: true, attributeFilter: ['value'] });
  });
  const input = await page.$('#upload-files');
  await input.uploadFile(cfg.jsonl);
  await page.click('#upload-submit');
  await page.waitForFunction(() => /^added|^stopped/.test(document.getElementById('upload-status').textContent),
    { timeout: 120000 });
  obs.uploadStatus = await page.$eval('#upload-status', (e) => e.textContent);
  obs.progress = await page.evaluate(() => window.__progress);
  obs.progressMax = await page.$eval('#upload-progress', (e) => e.max);
  await page.waitForFunction(() => document.querySelectorAll('#mem-list li').length > 0);
  obs.listedAfterUpload = await allListed(page);
  obs.collectionRow = await page.$$eval('#coll-rows tr', (rs) => rs.map((r) => [...r.cells].map((c) => c.textContent)));

  // hostile texts through the Add form
  for (const [id, text] of [['hostile-img', '<img src=x onerror=alert(1)>'],
    ['hostile-script', '<script>alert(2)</script>']]) {
    await page.$eval('#add-text', (e, v) => { e.value = v; }, text);
    await page.$eval('#add-id', (e, v) => { e.value = v; }, id);
    await page.click('#add-submit');
    await page.waitForFunction(() => !document.getElementById('add-submit').disabled &&
      document.getElementById('add-text').value === '', { timeout: 60000 });
  }
  await openCollection(page, 'notes');
  obs.listedWithHostile = await allListed(page);
  obs.imgElements = await page.$$eval('img, #mem-list script', (es) => es.length);
  await page.click('#add-box summary'); // folded, so that the screenshot shows the list
  await page.click('#page-prev');
  await page.waitForFunction(() => document.getElementById('page-info').textContent === 'page 1');
  await sleep(300);
  await shot(page, obs, cfg.shots, 'memories');

  // search within the collection
  await page.type('#search', 'hostile');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => /match/.test(document.getElementById('search-status').textContent));
  obs.search = { status: await page.$eval('#search-status', (e) => e.textContent),
    ids: await texts(page, '#mem-list li .id') };
  await page.$eval('#search', (e) => { e.value = ''; });
  await page.click('#search-submit');
  await page.waitForFunction(() => document.getElementById('page-info').textContent === 'page 1');

  // edit m03 in its dialog, delete m05 through the confirmation dialog
  await page.click('button[aria-label="Edit memory m03"]');
  await page.waitForFunction(() => document.getElementById('memory-dialog').open &&
    !document.getElementById('memory-text').readOnly);
  await page.$eval('#memory-text', (e, v) => { e.value = v; }, cfg.edited);
  await page.click('#memory-save');
  // the dialog closes before the list is reloaded; the save button is enabled again after: a
  // click on the old list would find its button detached
  await page.waitForFunction(() => !document.getElementById('memory-dialog').open &&
    !document.getElementById('memory-save').disabled, { timeout: 60000 });
  await page.click('button[aria-label="Delete memory m05"]');
  await page.waitForFunction(() => document.getElementById('confirm-dialog').open);
  obs.confirmText = await page.$eval('#confirm-text', (e) => e.textContent);
  await page.click('#confirm-ok');
  await page.waitForFunction(() => !document.querySelector('button[aria-label="Delete memory m05"]'));

  // Ask, keyboard only: Tab to the question, type it, Tab to the token limit, Shift+Tab back,
  // Enter asks; the answer's text is recorded at each mutation
  await page.goto(cfg.base + '/#ask', { waitUntil: 'networkidle0' });
  await page.reload({ waitUntil: 'networkidle0' });
  await ready(page);
  await page.waitForFunction(() => document.getElementById('ask-collection').value === 'notes');
  obs.tabOrder = [];
  for (let i = 0; i < 20; i++) {
    await page.keyboard.press('Tab');
    const id = await page.evaluate(() => document.activeElement.id || document.activeElement.tagName);
    obs.tabOrder.push(id);
    if (id === 'ask-question') break;
  }
  await page.keyboard.type(cfg.question);
  for (let i = 0; i < 6; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate(() => document.activeElement.id === 'ask-max')) break;
  }
  await page.keyboard.down('Control');
  await page.keyboard.press('KeyA');
  await page.keyboard.up('Control');
  await page.keyboard.type(String(cfg.maxTokens));
  for (let i = 0; i < 6; i++) {
    await page.keyboard.down('Shift');
    await page.keyboard.press('Tab');
    await page.keyboard.up('Shift');
    if (await page.evaluate(() => document.activeElement.id === 'ask-question')) break;
  }
  obs.focusBeforeEnter = await page.evaluate(() => document.activeElement.id);
  await watchAnswer(page);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => /decode|stopped/.test(document.getElementById('ask-timings').textContent) ||
    !document.getElementById('notice').hidden, { timeout: 120000 });
  obs.ask = await page.evaluate(() => ({
    states: window.__states,
    answer: document.getElementById('answer').textContent,
    timings: document.getElementById('ask-timings').textContent,
    used: [...document.querySelectorAll('#used li')].map((li) => li.textContent),
    notice: document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent,
    maxTokens: document.getElementById('ask-max').value,
  }));
  await shot(page, obs, cfg.shots, 'ask');

  // open the first memory used
  await page.click('#used li button');
  await page.waitForFunction(() => document.getElementById('memory-dialog').open &&
    document.getElementById('memory-text').value !== '');
  obs.opened = await page.evaluate(() => ({ title: document.getElementById('memory-title').textContent,
    text: document.getElementById('memory-text').value,
    label: document.querySelector('#used li button').textContent }));
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.getElementById('memory-dialog').open);

  // pasted documents (retrieval, with the scores of every document)
  await page.click('#ask-src-docs');
  await page.$eval('#ask-docs', (e, v) => { e.value = v; }, cfg.documents.join('\n\n'));
  await page.$eval('#ask-max', (e) => { e.value = '24'; });
  await watchAnswer(page);
  await page.click('#ask-submit');
  await page.waitForFunction(() => /decode/.test(document.getElementById('ask-timings').textContent) ||
    !document.getElementById('notice').hidden, { timeout: 120000 });
  obs.askDocs = await page.evaluate(() => ({ answer: document.getElementById('answer').textContent,
    used: [...document.querySelectorAll('#used li')].map((li) => li.textContent),
    states: window.__states.length }));

  // reload: what was stored is still there
  await page.reload({ waitUntil: 'networkidle0' });
  await ready(page);
  await openCollection(page, 'notes');
  obs.listedAfterReload = await allListed(page);

  // Server view: two polls at least, then the facts and the chart
  await gotoView(page, 'server');
  await page.waitForFunction(() => document.getElementById('srv-model').children.length > 0);
  await sleep(4500);
  obs.server = await page.evaluate(() => {
    const facts = {};
    for (const dl of ['srv-model', 'srv-traffic']) {
      const d = document.getElementById(dl);
      for (const dt of d.querySelectorAll('dt')) facts[dt.textContent] = dt.nextElementSibling.textContent;
    }
    return { facts, note: document.getElementById('latency-note').textContent };
  });
  await shot(page, obs, cfg.shots, 'server');
  await page.close();
}

// Pasted documents asked on a model slow enough that its tokens arrive one by one: the answer's
// text at every mutation, until the timings say the answer is complete.
async function scenarioStream(browser, cfg, obs) {
  const page = await browser.newPage();
  watch(page, obs);
  await page.setViewport(DESKTOP);
  await page.goto(cfg.base + '/', { waitUntil: 'networkidle0' });
  await ready(page);
  await page.click('#ask-src-docs');
  await page.$eval('#ask-docs', (e, v) => { e.value = v; }, cfg.documents.join('\n\n'));
  await page.$eval('#ask-max', (e, v) => { e.value = v; }, String(cfg.maxTokens));
  await page.focus('#ask-question');
  await page.keyboard.type(cfg.question);
  await watchAnswer(page);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => /decode/.test(document.getElementById('ask-timings').textContent) ||
    !document.getElementById('notice').hidden, { timeout: 120000 });
  obs.stream = await page.evaluate(() => ({ states: window.__states,
    answer: document.getElementById('answer').textContent,
    notice: document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent }));
  await page.close();
}

async function scenarioKey(browser, cfg, obs) {
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();
  watch(page, obs);
  await page.setViewport(DESKTOP);
  await page.evaluateOnNewDocument(() => {
    window.__opened = 0;
    document.addEventListener('DOMContentLoaded', () => {
      const d = document.getElementById('key-dialog');
      new MutationObserver(() => { if (d.open) window.__opened++; })
        .observe(d, { attributes: true, attributeFilter: ['open'] });
    });
  });
  await page.goto(cfg.base + '/', { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => document.getElementById('key-dialog').open, { timeout: 30000 });
  // a key with a pasted typographic quote: no browser can send it in a header
  await page.type('#key-input', cfg.key + '\u2019');
  await page.keyboard.press('Enter');
  await sleep(300);
  obs.badKey = await page.evaluate((k) => ({ open: document.getElementById('key-dialog').open,
    title: document.getElementById('key-title').textContent, stored: sessionStorage.getItem(k) }),
  'clara-api-key');
  await page.$eval('#key-input', (e) => { e.value = ''; });
  await page.type('#key-input', cfg.key);
  await page.keyboard.press('Enter');
  await ready(page);
  await gotoView(page, 'memories');
  await page.waitForSelector('#coll-rows tr');
  obs.keyFirst = await page.evaluate((k) => ({
    opened: window.__opened,
    stored: sessionStorage.getItem(k),
    notice: document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent,
    collections: [...document.querySelectorAll('#coll-rows tr td:first-child')].map((e) => e.textContent),
    url: location.href,
  }), 'clara-api-key');
  await page.reload({ waitUntil: 'networkidle0' });
  await ready(page);
  await sleep(300);
  obs.keyAfterReload = await page.evaluate(() => ({ opened: window.__opened,
    dialogOpen: document.getElementById('key-dialog').open,
    notice: document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent }));
  await ctx.close();
}

// A memory whose text has CR and CRLF line breaks, and metadata: opened for editing and saved
// unchanged, then saved with its metadata field emptied; what the API has after each.
async function scenarioEdits(browser, cfg, obs) {
  const page = await browser.newPage();
  watch(page, obs);
  await page.setViewport(DESKTOP);
  await page.goto(cfg.base + '/', { waitUntil: 'networkidle0' });
  await ready(page);
  const get = () => page.evaluate(async (u) => (await (await fetch(u)).json()).memory, cfg.memoryUrl);
  await page.evaluate(async (c) => {
    const r = await fetch(c.collUrl, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ memories: [c.memory] }) });
    if (r.status !== 201) throw new Error('add: ' + r.status);
  }, cfg);
  await page.reload({ waitUntil: 'networkidle0' });
  await ready(page);
  obs.before = await get();
  const edit = async () => {
    await openCollection(page, cfg.collection);
    await page.click(`button[aria-label="Edit memory ${cfg.memory.id}"]`);
    await page.waitForFunction(() => document.getElementById('memory-dialog').open &&
      !document.getElementById('memory-text').readOnly);
  };
  const save = async () => {
    await page.click('#memory-save');
    await page.waitForFunction(() => !document.getElementById('memory-dialog').open &&
      !document.getElementById('memory-save').disabled, { timeout: 60000 });
    await sleep(300);
  };
  await edit();
  obs.shownMeta = await page.$eval('#memory-meta', (e) => e.value);
  const puts = () => obs.requests.filter((r) => r.method === 'PUT').length;
  const put0 = puts();
  await save();
  obs.putsUnchanged = puts() - put0;
  obs.afterUnchanged = await get();
  await edit();
  await page.$eval('#memory-meta', (e) => { e.value = ''; });
  await save();
  obs.putsCleared = puts() - put0;
  obs.afterCleared = await get();
  obs.notice = await page.$eval('#notice', (e) => (e.hidden ? '' : e.textContent));
  await page.close();
}

// A question whose answer's stream ends cleanly after its first piece, without [DONE] (what a
// proxy's read timeout or a restart does; the browser is told to answer the request so): what the
// page shows.
async function scenarioCut(browser, cfg, obs) {
  const page = await browser.newPage();
  watch(page, obs);
  await page.setViewport(DESKTOP);
  await page.goto(cfg.base + '/', { waitUntil: 'networkidle0' });
  await ready(page);
  await page.setRequestInterception(true);
  page.on('request', (r) => {
    if (r.method() === 'POST' && /\/v1\/(answer|retrieve)$/.test(new URL(r.url()).pathname))
      r.respond({ status: 200, contentType: 'text/event-stream',
        body: 'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n' });
    else r.continue();
  });
  await page.click('#ask-src-docs');
  await page.$eval('#ask-docs', (e, v) => { e.value = v; }, cfg.documents.join('\n\n'));
  await page.$eval('#ask-question', (e, v) => { e.value = v; }, cfg.question);
  await page.click('#ask-submit');
  await page.waitForFunction(() => !document.getElementById('notice').hidden ||
    /decode/.test(document.getElementById('ask-timings').textContent), { timeout: 60000 });
  obs.cut = await page.evaluate(() => ({ notice: document.getElementById('notice').textContent,
    noticeShown: !document.getElementById('notice').hidden,
    answer: document.getElementById('answer').textContent,
    timings: document.getElementById('ask-timings').textContent }));
  await page.close();
}

async function main() {
  const puppeteer = require(path.join(process.argv[2], 'node_modules', 'puppeteer-core'));
  const cfg = JSON.parse(fs.readFileSync(0, 'utf8'));
  const obs = { console: [], pageErrors: [], dialogs: [], requests: [], failed: [], phoneOverflow: {} };
  const args = ['--no-first-run', '--no-default-browser-check', '--disable-gpu', '--disable-extensions'];
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');
  const browser = await puppeteer.launch({ executablePath: cfg.chromium, headless: true, args,
    userDataDir: cfg.profile });
  obs.browserVersion = await browser.version();
  try {
    if (cfg.scenario === 'main') await scenarioMain(browser, cfg, obs);
    else if (cfg.scenario === 'stream') await scenarioStream(browser, cfg, obs);
    else if (cfg.scenario === 'edits') await scenarioEdits(browser, cfg, obs);
    else if (cfg.scenario === 'cut') await scenarioCut(browser, cfg, obs);
    else await scenarioKey(browser, cfg, obs);
  } catch (e) {
    obs.error = String(e && e.stack || e);
    // what the page showed when it went wrong
    for (const p of await browser.pages()) {
      obs.errorNotice = await p.evaluate(() => document.getElementById('notice').textContent).catch(() => null);
      await p.screenshot({ path: path.join(cfg.shots, 'error-' + cfg.scenario + '.png') }).catch(() => null);
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(obs));
}
main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
