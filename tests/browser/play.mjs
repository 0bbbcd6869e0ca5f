#!/usr/bin/env node
// Plays HLS or DASH streams in headless Chromium with real players
// (hls.js, dash.js or Shaka), each with its default settings, and prints one
// JSON line per play saying how it went. Strata's Rust integration tests
// spawn it; see README.md for the contract.
//
//   node tests/browser/play.mjs --player hls|dash|shaka --url URL
//        [--player P --url U ...]
//        [--seconds 10] [--timeout 60] [--h3 HOST:PORT [--h3-cert PEM | --h3-spki B64]]
//        [--clearkey KID_HEX:KEY_HEX ... | --licence-url URL] [--cmcd query|headers] [--verbose]
//        [--insecure-tls]  (accept a self-signed certificate over TLS, h1/h2)
//        [--low-latency]   (Shaka: streaming.lowLatencyMode, as a site playing LL
//                           streams sets it; hls.js and dash.js choose low
//                           latency by default from the playlist or MPD)
//        [--seek SECONDS]  (after the --seconds of play, seek there and require
//                           playback to go on 2 s past it: `seek` in the report)
//        [--ll-trace]      (hls.js: add `trace` to the report, what hls.js saw per
//                           playlist load and fragment/part: page.js traceHls)
//
// Several --player/--url pairs play at once, one page each in one Chromium.
// Exit 0 when every play's currentTime advanced by at least 0.8 × --seconds
// with no fatal player error, 1 otherwise, 2 on a usage error.

import crypto from 'node:crypto';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODULES = path.join(HERE, 'node_modules');

// Player library files served to the page (paths inside node_modules).
const PLAYER_LIBS = {
  hls: 'hls.js/dist/hls.min.js',
  dash: 'dashjs/dist/modern/umd/dash.all.min.js',
  shaka: 'shaka-player/dist/shaka-player.compiled.js',
};

// ------------------------------------------------------------------ CLI

function usage(msg) {
  process.stderr.write(
    `play.mjs: ${msg}\n` +
      'usage: node play.mjs --player hls|dash|shaka --url URL [--player P --url U ...] [--seconds N] [--timeout N]\n' +
      '                     [--h3 HOST:PORT [--h3-cert PEM | --h3-spki BASE64]]\n' +
      '                     [--clearkey KID_HEX:KEY_HEX ... | --licence-url URL] [--cmcd query|headers] [--verbose]\n' +
      '                     [--insecure-tls] [--low-latency] [--ll-trace]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { plays: [], seconds: 10, timeout: 60, clearkeys: [], h3: null, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('--')) usage(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--player': opts.plays.push({ player: value() }); break;
      case '--url':
        if (!opts.plays.length || opts.plays[opts.plays.length - 1].url !== undefined) usage('--url goes after its --player');
        opts.plays[opts.plays.length - 1].url = value();
        break;
      case '--seconds': opts.seconds = Number(value()); break;
      case '--timeout': opts.timeout = Number(value()); break;
      case '--h3': opts.h3 = value(); break;
      case '--h3-cert': opts.h3Cert = value(); break;
      case '--h3-spki': opts.h3Spki = value(); break;
      case '--verbose': opts.verbose = true; break;
      case '--insecure-tls': opts.insecureTls = true; break;
      case '--low-latency': opts.lowLatency = true; break;
      case '--ll-trace': opts.llTrace = true; break;
      case '--licence-url': opts.licenceUrl = value(); break;
      case '--seek': opts.seek = Number(value()); break;
      case '--cmcd': opts.cmcd = value(); break;
      case '--clearkey':
        // One or more KID:KEY pairs, as repeated flags or as a list.
        opts.clearkeys.push(value());
        while (i + 1 < argv.length && !argv[i + 1].startsWith('--')) opts.clearkeys.push(argv[++i]);
        break;
      case '-h':
      case '--help':
        usage('help');
        break;
      default: usage(`unknown argument ${arg}`);
    }
  }
  if (!opts.plays.length) usage('--player is required');
  for (const play of opts.plays) {
    if (!PLAYER_LIBS[play.player]) usage('--player must be hls, dash or shaka');
    if (!play.url) usage('--url is required');
    try { new URL(play.url); } catch { usage(`--url is not an absolute URL: ${play.url}`); }
  }
  if (opts.licenceUrl !== undefined) {
    try { new URL(opts.licenceUrl); } catch { usage(`--licence-url is not an absolute URL: ${opts.licenceUrl}`); }
    if (opts.clearkeys.length) usage('--licence-url and --clearkey exclude each other: licences come from one place');
  }
  if (!(opts.seconds > 0)) usage('--seconds must be a positive number');
  if (opts.seek !== undefined && !(opts.seek >= 0)) usage('--seek must be a number of seconds');
  if (!(opts.timeout > 0)) usage('--timeout must be a positive number');
  if (opts.cmcd !== undefined && !['query', 'headers'].includes(opts.cmcd)) usage('--cmcd must be query or headers');
  if (opts.h3 && !/^[^:\s]+:\d+$/.test(opts.h3)) usage('--h3 must be HOST:PORT');
  if ((opts.h3Cert || opts.h3Spki) && !opts.h3) usage('--h3-cert and --h3-spki go with --h3');
  if (opts.h3Cert) {
    try {
      opts.h3Spki = spkiHash(fs.readFileSync(opts.h3Cert));
    } catch (e) {
      usage(`--h3-cert ${opts.h3Cert}: ${e.message}`);
    }
  }
  opts.keys = opts.clearkeys.map((pair) => {
    const m = /^([0-9a-fA-F]{32}):([0-9a-fA-F]{32})$/.exec(pair.replace(/-/g, ''));
    if (!m) usage(`--clearkey wants KID_HEX:KEY_HEX (32 hex digits each), got ${pair}`);
    return { kid: m[1].toLowerCase(), key: m[2].toLowerCase() };
  });
  return opts;
}

// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: the form
// --ignore-certificate-errors-spki-list takes.
function spkiHash(pem) {
  const spki = new crypto.X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}

const opts = parseArgs(process.argv.slice(2));
const log = (...a) => process.stderr.write(`play.mjs: ${a.join(' ')}\n`);
// --verbose lines carry the seconds since start, to read request timings.
const started = Date.now();
const debug = (...a) => { if (opts.verbose) log(`+${((Date.now() - started) / 1000).toFixed(3)}`, ...a); };

// ------------------------------------------------------------------ result

const results = opts.plays.map((play) => ({
  ok: false,
  player: play.player,
  url: play.url,
  startTime: null,
  endTime: null,
  advanced: 0,
  stalls: 0,
  longestStall: 0,
  startLatency: null,
  playerLatency: null, // {min, mean, max, samples} over the sampled seconds
  wallLatency: null, // the same, from the ingest wall clock (program-date-time) to now
  minBufferAhead: null,
  errors: [],
  levels: 0,
  playedLevels: [],
  audioLanguage: null,
  audioLanguages: [],
  textLanguage: null,
  textLanguages: [],
  protocols: {},
}));

let printed = false;
function finish(extraError) {
  if (printed) return;
  printed = true;
  let ok = true;
  for (const result of results) {
    if (extraError) result.errors.push({ fatal: true, source: 'harness', message: String(extraError) });
    const fatal = result.errors.some((e) => e.fatal);
    result.ok = !fatal && result.advanced >= 0.8 * opts.seconds;
    ok = ok && result.ok;
    process.stdout.write(JSON.stringify(result) + '\n');
  }
  process.exitCode = ok ? 0 : 1;
}

// Last resort: whatever hangs, print a result and leave after --timeout.
const hardStop = setTimeout(() => {
  finish(`harness timed out after ${opts.timeout}s`);
  process.exit(1);
}, (opts.timeout + 15) * 1000);
hardStop.unref();

// ------------------------------------------------------------------ page server

const b64url = (hex) => Buffer.from(hex, 'hex').toString('base64url');

// The page for play `i` (`/?play=i`): the player library and page.js, with
// only what a real site would configure: the stream URL and, for encrypted
// streams, where ClearKey licences come from.
function pageHtml(port, i) {
  const play = opts.plays[i];
  const config = {
    player: play.player,
    url: play.url,
    keys: opts.keys.map((k) => ({ kid: k.kid, key: k.key, kidB64: b64url(k.kid), keyB64: b64url(k.key) })),
    // ClearKey licences: from --licence-url (a real licence server), else
    // from play.mjs's own /clearkey with the --clearkey keys.
    clearkey: opts.keys.length > 0 || Boolean(opts.licenceUrl),
    remoteLicence: Boolean(opts.licenceUrl),
    licenseUrl: opts.licenceUrl || `http://127.0.0.1:${port}/clearkey`,
    // CMCD on, as a site turns it on: the player's defaults, in query or header mode.
    cmcd: opts.cmcd || null,
    // Low-latency mode where the player wants to be told (Shaka).
    lowLatency: Boolean(opts.lowLatency),
  };
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>strata play ${play.player}</title></head>
<body>
<video id="video" muted autoplay playsinline width="640" height="360"></video>
<script>window.STRATA_CONFIG = ${JSON.stringify(config)};</script>
<script src="/lib/${play.player}.js"></script>
<script src="/page.js"></script>
</body></html>`;
}

// ClearKey license per W3C EME §9.1.4: a JSON Web Key set with every
// --clearkey key, the requested ones first, as Shaka's drm.clearKeys does.
// A licence may carry keys that were not asked for, and with key rotation
// hls.js (1.7) needs them: for ClearKey it does not read the KID of an
// in-band pssh, so it may pair a late "encrypted" event of the previous key
// period with the next period's session, whose request then names the
// previous KID.
function clearkeyLicense(body) {
  let wanted = [];
  try { wanted = JSON.parse(body).kids || []; } catch { /* answer with every key */ }
  const asked = (k) => Array.isArray(wanted) && wanted.includes(k.kid);
  const all = opts.keys.map((k) => ({ kty: 'oct', kid: b64url(k.kid), k: b64url(k.key) }));
  const keys = [...all.filter(asked), ...all.filter((k) => !asked(k))];
  return JSON.stringify({ keys, type: 'temporary' });
}

function startPageServer() {
  const server = http.createServer((req, res) => {
    const send = (status, type, body) => {
      res.writeHead(status, {
        'content-type': type,
        'cache-control': 'no-store',
        'access-control-allow-origin': '*',
      });
      res.end(body);
    };
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/') {
      const i = Number(url.searchParams.get('play') || 0);
      if (!(i >= 0 && i < opts.plays.length)) return send(404, 'text/plain', 'no such play');
      return send(200, 'text/html; charset=utf-8', pageHtml(server.address().port, i));
    }
    if (url.pathname === '/favicon.ico') return send(204, 'image/x-icon', '');
    if (url.pathname === '/page.js') return send(200, 'text/javascript', fs.readFileSync(path.join(HERE, 'page.js')));
    const lib = /^\/lib\/(hls|dash|shaka)\.js$/.exec(url.pathname);
    if (lib) {
      const file = path.join(MODULES, PLAYER_LIBS[lib[1]]);
      if (!fs.existsSync(file)) return send(500, 'text/plain', `missing ${file}; run npm ci in tests/browser`);
      return send(200, 'text/javascript', fs.readFileSync(file));
    }
    if (url.pathname === '/clearkey') {
      if (req.method === 'OPTIONS') {
        res.writeHead(204, {
          'access-control-allow-origin': '*',
          'access-control-allow-methods': 'POST',
          'access-control-allow-headers': '*',
        });
        return res.end();
      }
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => send(200, 'application/json', clearkeyLicense(body)));
      return;
    }
    send(404, 'text/plain', 'not found');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// ------------------------------------------------------------------ browser

function chromiumArgs(userDataDir) {
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    `--user-data-dir=${userDataDir}`,
  ];
  if (opts.h3) {
    // --enable-quic turns QUIC on; --origin-to-force-quic-on makes Chromium
    // speak HTTP/3 to that HOST:PORT straight away (no Alt-Svc discovery
    // needed, and no TCP fallback). Media URLs must then be https://HOST:PORT/.
    // --ignore-certificate-errors accepts a self-signed certificate over TCP
    // (h1/h2) only: Chromium's QUIC stack rejects it anyway
    // (QUIC_TLS_CERTIFICATE_UNKNOWN) unless the certificate's key is also
    // listed in --ignore-certificate-errors-spki-list (from --h3-cert/--h3-spki).
    args.push('--enable-quic', `--origin-to-force-quic-on=${opts.h3}`, '--ignore-certificate-errors');
    if (opts.h3Spki) args.push(`--ignore-certificate-errors-spki-list=${opts.h3Spki}`);
  } else {
    args.push('--disable-quic');
    // --insecure-tls: h1/h2 over TLS to a test edge's self-signed certificate.
    if (opts.insecureTls) args.push('--ignore-certificate-errors');
  }
  return args;
}

async function main() {
  const require = createRequire(import.meta.url);
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (e) {
    throw new Error(`cannot load playwright-core (run npm ci in tests/browser): ${e.message}`);
  }
  const executablePath = process.env.STRATA_CHROMIUM || '/usr/bin/chromium';
  const deadline = Date.now() + opts.timeout * 1000;
  const left = () => deadline - Date.now();

  const server = await startPageServer();
  const pageUrl = `http://127.0.0.1:${server.address().port}/`;
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-chromium-'));
  let context;
  const cleanup = async () => {
    if (context) await context.close().catch(() => {});
    server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };

  try {
    // launchPersistentContext is Playwright's way to pass our own fresh
    // --user-data-dir; the flag itself is in chromiumArgs for the record, so
    // Playwright is told the directory instead and the flag is dropped here.
    const args = chromiumArgs(userDataDir).filter((a) => !a.startsWith('--user-data-dir='));
    debug('chromium', executablePath, args.join(' '));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args,
      timeout: Math.max(1000, left()),
    });
    const first = context.pages()[0] || (await context.newPage());
    const pages = [first];
    while (pages.length < opts.plays.length) pages.push(await context.newPage());
    await Promise.all(
      pages.map((page, i) => playOn(context, page, i, `${pageUrl}?play=${i}`, pageUrl, left)),
    );
  } finally {
    await cleanup();
  }
}

// Plays opts.plays[i] on `page` and fills results[i].
async function playOn(context, page, i, url, pageOrigin, left) {
  const result = results[i];
  const tag = opts.plays.length > 1 ? `[${i} ${opts.plays[i].player}] ` : '';
  page.on('console', (msg) => {
    if (opts.verbose || msg.type() === 'error') log(`${tag}console.${msg.type()}:`, msg.text());
  });
  page.on('pageerror', (err) => {
    result.errors.push({ fatal: true, source: 'page', message: err.message });
  });

  // Which protocol each media response came over (h3, h2, http/1.1), from
  // the DevTools protocol: it is the only place Chromium reports it for
  // cross-origin requests.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.responseReceived', (e) => {
    if (e.response.url.startsWith(pageOrigin)) return;
    const proto = e.response.protocol || 'unknown';
    result.protocols[proto] = (result.protocols[proto] || 0) + 1;
    debug(`${tag}response`, proto, e.response.status, e.response.url);
  });
  cdp.on('Network.requestWillBeSent', (e) => {
    if (!e.request.url.startsWith(pageOrigin)) debug(`${tag}request`, e.request.url);
  });
  cdp.on('Network.loadingFailed', (e) => {
    if (!e.canceled) debug(`${tag}loading failed`, e.errorText, e.blockedReason || '');
  });

  await page.goto(url, { timeout: Math.max(1000, left()) });
  await page.waitForFunction(() => window.strataState !== undefined, null, { timeout: Math.max(1000, left()) });

  const snapshot = () => page.evaluate(() => window.strataSnapshot());
  const absorb = (s) => {
    result.errors = s.errors;
    result.levels = s.levels;
    result.playedLevels = s.playedLevels;
    result.audioLanguage = s.audioLanguage;
    result.audioLanguages = s.audioLanguages;
    result.textLanguage = s.textLanguage;
    result.textLanguages = s.textLanguages;
    if (s.tracksError) result.tracksError = s.tracksError;
    result.stalls = s.stalls;
    result.longestStall = Math.round(s.longestStall * 1000) / 1000;
    result.minBufferAhead = s.minAhead === null ? null : round(s.minAhead);
  };

  // Wait for playback to start: the first sample whose currentTime moved.
  let s = await snapshot();
  let firstTime = null;
  while (left() > 0) {
    absorb(s);
    if (s.errors.some((e) => e.fatal)) break;
    if (s.started) {
      if (firstTime === null) firstTime = s.currentTime;
      else if (s.currentTime > firstTime) break;
    }
    await sleep(Math.min(250, Math.max(0, left())));
    s = await snapshot();
  }
  if (!s.started || firstTime === null || !(s.currentTime > firstTime)) {
    absorb(s);
    if (!s.errors.some((e) => e.fatal)) {
      result.errors.push({
        fatal: true,
        source: 'harness',
        message: `playback did not start within ${opts.timeout}s (readyState ${s.readyState}, currentTime ${s.currentTime}, buffered ${JSON.stringify(s.buffered)}, waitingforkey ${s.keyWaits})`,
      });
    }
    return;
  }

  // Sample for --seconds of wall-clock time once it plays.
  result.startTime = round(s.currentTime);
  result.startLatency = s.latency === null ? null : round(s.latency);
  await page.evaluate(() => window.strataMarkStart());
  const until = Date.now() + opts.seconds * 1000;
  const latencies = [];
  const wallLatencies = [];
  while (Date.now() < until && left() > 0) {
    await sleep(Math.min(500, until - Date.now()));
    s = await snapshot();
    absorb(s);
    if (s.playerLatency !== null) {
      latencies.push(s.playerLatency);
      const sum = latencies.reduce((a, b) => a + b, 0);
      result.playerLatency = {
        min: round(Math.min(...latencies)),
        mean: round(sum / latencies.length),
        max: round(Math.max(...latencies)),
        samples: latencies.length,
      };
    }
    if (s.wallLatency !== null) {
      wallLatencies.push(s.wallLatency);
      result.wallLatency = summary(wallLatencies);
    }
    debug(`${tag}t=${s.currentTime.toFixed(2)} buffered=${s.bufferedEnd.toFixed(2)} level=${JSON.stringify(s.level)}`);
    if (s.errors.some((e) => e.fatal)) break;
  }
  await page.evaluate(() => window.strataCloseStall());
  absorb(await snapshot());
  if (opts.llTrace) result.trace = await page.evaluate(() => (window.strataTrace ? window.strataTrace() : null));
  result.endTime = round(s.currentTime);
  result.advanced = round(s.currentTime - result.startTime);
  if (Date.now() < until) {
    result.errors.push({ fatal: true, source: 'harness', message: `--timeout ${opts.timeout}s reached during playback` });
    return;
  }
  if (opts.seek !== undefined && !s.errors.some((e) => e.fatal)) {
    // Stalls were counted above; the wait a seek causes is not one.
    const to = opts.seek;
    await page.evaluate((t) => { window.strataState.counting = false; document.getElementById('video').currentTime = t; }, to);
    let reached = null;
    while (left() > 0) {
      await sleep(250);
      s = await snapshot();
      result.errors = s.errors;
      if (s.errors.some((e) => e.fatal)) break;
      if (s.currentTime >= to + 2) { reached = s.currentTime; break; }
    }
    result.seek = { to, reached: reached === null ? null : round(reached), currentTime: round(s.currentTime) };
    if (reached === null && !s.errors.some((e) => e.fatal)) {
      result.errors.push({ fatal: true, source: 'harness', message: `after seeking to ${to}s playback did not reach ${to + 2}s (currentTime ${s.currentTime}, buffered ${JSON.stringify(s.buffered)}, waitingforkey ${s.keyWaits})` });
    }
  }
}

const summary = (xs) => ({
  min: round(Math.min(...xs)),
  mean: round(xs.reduce((a, b) => a + b, 0) / xs.length),
  max: round(Math.max(...xs)),
  samples: xs.length,
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x) => Math.round(x * 1000) / 1000;

main().then(
  () => finish(),
  (err) => finish(err && err.message ? err.message.split('\n')[0] : err),
);
