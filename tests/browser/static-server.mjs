#!/usr/bin/env node
// A tiny CORS-enabled static file server for test fixtures:
//   node static-server.mjs DIR
// Listens on 127.0.0.1 with a port the OS picks and prints the port alone on
// the first line of stdout. Every response carries
// Access-Control-Allow-Origin: *, as Strata's own media servers do; playlists
// and manifests are sent with Cache-Control: no-cache so live ones refresh.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(process.argv[2] || '.');
const TYPES = {
  '.m3u8': 'application/vnd.apple.mpegurl',
  '.mpd': 'application/dash+xml',
  '.m4s': 'video/iso.segment',
  '.mp4': 'video/mp4',
  '.m4a': 'audio/mp4',
  '.m4v': 'video/mp4',
  '.ts': 'video/mp2t',
  '.key': 'application/octet-stream',
  '.json': 'application/json',
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
};

const server = http.createServer((req, res) => {
  const headers = {
    'access-control-allow-origin': '*',
    'access-control-allow-headers': '*',
    'access-control-expose-headers': '*',
  };
  if (req.method === 'OPTIONS') {
    res.writeHead(204, { ...headers, 'access-control-allow-methods': 'GET, HEAD' });
    return res.end();
  }
  const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  // The clock the test content's MPDs name (ffmpeg -utc_timing_url /time), as
  // an origin serves one: ISO 8601 UTC with milliseconds.
  if (rel === '/time') {
    res.writeHead(200, { ...headers, 'content-type': 'text/plain', 'cache-control': 'no-store' });
    return res.end(new Date().toISOString());
  }
  const file = path.join(root, path.normalize(rel));
  if (!file.startsWith(root)) {
    res.writeHead(403, headers);
    return res.end();
  }
  fs.readFile(file, (err, data) => {
    if (err) {
      res.writeHead(404, { ...headers, 'content-type': 'text/plain' });
      return res.end('not found');
    }
    const ext = path.extname(file);
    res.writeHead(200, {
      ...headers,
      'content-type': TYPES[ext] || 'application/octet-stream',
      'content-length': data.length,
      'cache-control': ext === '.m3u8' || ext === '.mpd' ? 'no-cache' : 'max-age=60',
    });
    res.end(req.method === 'HEAD' ? undefined : data);
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
