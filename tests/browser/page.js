// In-page half of play.mjs: sets up the player named in window.STRATA_CONFIG
// on the <video>, and keeps the state that play.mjs samples through
// window.strataSnapshot(). Every player runs with its default settings plus
// only what a real site sets: ClearKey licences for encrypted streams.
(function () {
  'use strict';
  const cfg = window.STRATA_CONFIG;
  const video = document.getElementById('video');
  video.muted = true;

  const MAX_ERRORS = 50;
  const state = {
    started: false,
    errors: [],
    levels: [], // [{bandwidth, width, height}] ascending by bandwidth
    current: null, // the level now playing
    played: new Map(), // key -> level
    stalls: 0,
    longestStall: 0, // seconds, of the stalls counted
    counting: false, // stalls count only after play.mjs marks the start
    waitingSince: null, // {at: ms, currentTime}
  };
  window.strataState = state;

  function error(fatal, source, message) {
    if (state.errors.length < MAX_ERRORS) state.errors.push({ fatal, source, message: String(message) });
  }

  function setLevels(list) {
    state.levels = list
      .map((l) => ({ bandwidth: l.bandwidth || 0, width: l.width || 0, height: l.height || 0 }))
      .sort((a, b) => a.bandwidth - b.bandwidth || a.height - b.height);
  }

  // The player's view of the rendition being played now, or null.
  let currentLevel = () => null;
  // The player's audio and text tracks: {audioLanguage, audioLanguages,
  // textLanguage, textLanguages} (languages as the manifest names them;
  // textLanguage null while no subtitles show).
  let tracks = () => ({ audioLanguage: null, audioLanguages: [], textLanguage: null, textLanguages: [] });

  // ---------------------------------------------------------- stalls
  // A stall is a 'waiting' after which currentTime did not move for > 1 s.
  function closeStall() {
    const w = state.waitingSince;
    if (!w) return;
    if (video.currentTime > w.currentTime + 0.01 || video.ended) {
      const took = performance.now() - w.at;
      if (took > 1000 && state.counting) {
        state.stalls++;
        state.longestStall = Math.max(state.longestStall, took / 1000);
      }
      state.waitingSince = null;
    }
  }
  video.addEventListener('waiting', () => {
    if (!state.waitingSince) state.waitingSince = { at: performance.now(), currentTime: video.currentTime };
  });
  video.addEventListener('timeupdate', closeStall);

  // Seconds of media buffered ahead of the playhead, and the least of that
  // seen while stalls count: a player that starts at the live edge runs with
  // next to nothing in hand and stalls on the first late segment.
  function bufferAhead() {
    const b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= video.currentTime + 0.1 && video.currentTime < b.end(i)) return b.end(i) - video.currentTime;
    }
    return 0;
  }
  state.minAhead = null;
  video.addEventListener('timeupdate', () => {
    if (!state.counting || video.paused) return;
    const ahead = bufferAhead();
    if (state.minAhead === null || ahead < state.minAhead) state.minAhead = ahead;
  });
  video.addEventListener('playing', () => {
    state.started = true;
    closeStall();
  });
  state.keyWaits = 0;
  video.addEventListener('waitingforkey', () => { state.keyWaits++; });
  video.addEventListener('error', () => {
    const e = video.error;
    error(true, 'video', e ? `MediaError ${e.code}: ${e.message}` : 'media element error');
  });

  window.strataMarkStart = () => {
    state.counting = true;
    state.stalls = 0;
    state.longestStall = 0;
    state.waitingSince = null;
  };
  // At the end: a stall still open and older than 1 s counts too.
  window.strataCloseStall = () => {
    const w = state.waitingSince;
    if (w && state.counting && performance.now() - w.at > 1000 && video.currentTime <= w.currentTime + 0.01) {
      state.stalls++;
      state.longestStall = Math.max(state.longestStall, (performance.now() - w.at) / 1000);
      state.waitingSince = null;
    }
  };

  window.strataSnapshot = () => {
    const lvl = currentLevel();
    if (lvl && state.counting) {
      state.current = lvl;
      state.played.set(`${lvl.bandwidth}/${lvl.height}`, lvl);
    }
    const b = video.buffered;
    return {
      started: state.started && !video.paused,
      currentTime: video.currentTime,
      readyState: video.readyState,
      bufferedEnd: b.length ? b.end(b.length - 1) : 0,
      buffered: Array.from({ length: b.length }, (_, i) => [b.start(i), b.end(i)]),
      keyWaits: state.keyWaits,
      errors: state.errors,
      levels: state.levels.length,
      level: lvl,
      ...safeTracks(),
      playedLevels: [...state.played.values()].sort((a, b) => a.bandwidth - b.bandwidth),
      stalls: state.stalls,
      longestStall: state.longestStall,
      minAhead: state.minAhead,
      // Live latency as the player sees it: from the playhead to the end of
      // the seekable range (the live edge the player computed).
      latency: video.seekable.length ? video.seekable.end(video.seekable.length - 1) - video.currentTime : null,
      // The latency the player itself reports (hls.js `latency`: seconds
      // behind the live edge of the playlist it last loaded; dash.js
      // `getCurrentLiveLatency()`: seconds behind the wall clock, synced
      // through the MPD's UTCTiming).
      playerLatency: reportedLatency(),
      // Seconds from the wall-clock time of the frame on screen (the
      // program-date-time the origin stamped at ingest: hls.js
      // `playingDate`, Shaka `getPlayheadTimeAsDate()`) to now; dash.js's
      // `getCurrentLiveLatency()` is already this.
      wallLatency: wallLatency(),
    };
  };

  function wallLatency() {
    const p = window.strataPlayer;
    let date = null;
    try {
      if (p && p.playingDate instanceof Date) date = p.playingDate;
      else if (p && typeof p.getPlayheadTimeAsDate === 'function') date = p.getPlayheadTimeAsDate();
      else if (p && typeof p.getCurrentLiveLatency === 'function' && p.isReady && p.isReady()) return reportedLatency();
    } catch (e) {
      return null;
    }
    const t = date ? date.getTime() : NaN;
    return Number.isFinite(t) && t > 0 ? (Date.now() - t) / 1000 : null;
  }

  function safeTracks() {
    try {
      return tracks();
    } catch (e) {
      return { audioLanguage: null, audioLanguages: [], textLanguage: null, textLanguages: [], tracksError: String(e) };
    }
  }

  function reportedLatency() {
    const p = window.strataPlayer;
    let l = null;
    if (p && typeof p.latency === 'number') l = p.latency;
    else if (p && typeof p.getCurrentLiveLatency === 'function' && p.isReady && p.isReady()) l = p.getCurrentLiveLatency();
    return typeof l === 'number' && l > 0 ? l : null;
  }

  function play() {
    const p = video.play();
    if (p && p.catch) p.catch((e) => error(false, 'video', `play(): ${e.message}`));
  }

  // ---------------------------------------------------------- hls.js
  function startHls() {
    const config = {};
    if (cfg.clearkey) {
      // ClearKey through hls.js's EME path: licences come from --licence-url,
      // or from play.mjs's own /clearkey, which answers with the --clearkey keys.
      config.emeEnabled = true;
      config.drmSystems = { 'org.w3.clearkey': { licenseUrl: cfg.licenseUrl } };
    }
    if (cfg.cmcd) config.cmcd = cfg.cmcd === 'headers' ? { useHeaders: true } : {};
    const hls = new Hls(config);
    window.strataPlayer = hls;
    hls.on(Hls.Events.ERROR, (_, d) => {
      error(!!d.fatal, 'hls', `${d.type}/${d.details}${d.reason ? ': ' + d.reason : ''}${d.error ? ': ' + d.error.message : ''}`);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
      setLevels(d.levels.map((l) => ({ bandwidth: l.bitrate, width: l.width, height: l.height })));
      play();
    });
    currentLevel = () => {
      const l = hls.levels && hls.levels[hls.currentLevel];
      return l ? { bandwidth: l.bitrate, width: l.width || 0, height: l.height || 0 } : null;
    };
    tracks = () => {
      const audio = hls.audioTracks || [];
      const text = hls.subtitleTracks || [];
      const a = audio[hls.audioTrack];
      const t = hls.subtitleTrack >= 0 ? text[hls.subtitleTrack] : null;
      return {
        audioLanguage: a ? a.lang || null : null,
        audioLanguages: audio.map((x) => x.lang),
        textLanguage: t ? t.lang || null : null,
        textLanguages: text.map((x) => x.lang),
      };
    };
    traceHls(hls);
    hls.attachMedia(video);
    hls.loadSource(cfg.url);
  }

  // ---------------------------------------------------------- LL trace (hls.js)
  // What hls.js saw, for play.mjs --ll-trace: per playlist load its live
  // edge (`details.edge`, the end of the last part), the wall-clock time the
  // response's first byte came (`stats.loading.first`, where hls.js's `age`
  // counts from) and the program-date-time of that edge; per fragment or part
  // when it was asked for and when it was in; when playback started and at
  // which position. Times are wall-clock milliseconds (Date.now() base).
  const trace = { loads: [], frags: [], playing: null, startPosition: null, firstLatency: null };
  const wallOf = (perf) => (perf ? perf + (Date.now() - performance.now()) : null);
  window.strataTrace = () => trace;
  function traceHls(hls) {
    const E = Hls.Events;
    const onPlaylist = (type) => (_, d) => {
      if (trace.loads.length >= 400) return;
      const det = d.details;
      const frags = det.fragments;
      const last = frags[frags.length - 1];
      const edge = det.edge;
      // The edge's date: the last full segment's PROGRAM-DATE-TIME plus the
      // media from its start to the edge (its EXTINF and the open parts),
      // both in this playlist's own positions.
      const pdtEdge = last && last.programDateTime ? last.programDateTime + (edge - last.start) * 1000 : null;
      const first = wallOf(d.stats.loading.first);
      trace.loads.push({
        type,
        // The blocking-reload directives it was asked with (msn.part), if any.
        asked: d.deliveryDirectives && d.deliveryDirectives.msn !== undefined
          ? `${d.deliveryDirectives.msn}.${d.deliveryDirectives.part === undefined ? '' : d.deliveryDirectives.part}`
          : null,
        start: wallOf(d.stats.loading.start),
        first,
        end: wallOf(d.stats.loading.end),
        edge,
        lastSn: det.lastPartSn,
        lastPart: det.lastPartIndex,
        pdtEdge,
        // PDT of the edge minus when it arrived: how far the dates run
        // ahead of the clock at which the media they date was at hand.
        lead: pdtEdge !== null && first !== null ? (pdtEdge - first) / 1000 : null,
        partHoldBack: det.partHoldBack,
        ageHeader: det.ageHeader,
      });
    };
    hls.on(E.LEVEL_LOADED, onPlaylist('video'));
    hls.on(E.AUDIO_TRACK_LOADED, onPlaylist('audio'));
    hls.on(E.FRAG_LOADED, (_, d) => {
      if (trace.frags.length >= 400) return;
      const f = d.frag;
      const p = d.part;
      const st = (p || f).stats;
      trace.frags.push({
        type: f.type,
        sn: f.sn,
        part: p ? p.index : null,
        independent: p ? p.independent : null,
        start: (p || f).start,
        duration: (p || f).duration,
        requested: wallOf(st.loading.start),
        first: wallOf(st.loading.first),
        loaded: wallOf(st.loading.end),
      });
    });
    video.addEventListener('playing', () => {
      if (trace.playing !== null) return;
      trace.playing = Date.now();
      trace.startPosition = hls.startPosition;
      trace.playingAt = video.currentTime;
      trace.firstLatency = hls.latency;
    });
  }

  // ---------------------------------------------------------- dash.js
  function startDash() {
    const player = dashjs.MediaPlayer().create();
    window.strataPlayer = player;
    if (cfg.cmcd) player.updateSettings({ streaming: { cmcd: { enabled: true, mode: cfg.cmcd } } });
    if (cfg.remoteLicence) {
      player.setProtectionData({ 'org.w3.clearkey': { serverURL: cfg.licenseUrl } });
    } else if (cfg.keys.length) {
      const clearkeys = {};
      for (const k of cfg.keys) clearkeys[k.kidB64] = k.keyB64;
      player.setProtectionData({ 'org.w3.clearkey': { clearkeys } });
    }
    const ev = dashjs.MediaPlayer.events;
    player.on(ev.ERROR, (e) => {
      const err = e.error || {};
      // 27/28: a media or init segment download failed after dash.js's own
      // retries; dash.js blocks that BaseURL's service location and carries
      // on from the next (another CDN under content steering). Whether
      // playback suffered is judged by stalls and progress.
      const recoverable = err.code === 27 || err.code === 28;
      error(!recoverable, 'dash', `${err.code !== undefined ? err.code + ' ' : ''}${err.message || JSON.stringify(e.error)}`);
    });
    player.on(ev.PLAYBACK_ERROR, (e) => error(true, 'dash', `playback: ${e.error && (e.error.message || e.error)}`));
    player.on(ev.STREAM_INITIALIZED, () => {
      setLevels(player.getRepresentationsByType('video').map((r) => ({ bandwidth: r.bandwidth, width: r.width, height: r.height })));
    });
    currentLevel = () => {
      const r = player.isReady() && player.getCurrentRepresentationForType('video');
      return r ? { bandwidth: r.bandwidth, width: r.width || 0, height: r.height || 0 } : null;
    };
    tracks = () => {
      if (!player.isReady()) return { audioLanguage: null, audioLanguages: [], textLanguage: null, textLanguages: [] };
      const a = player.getCurrentTrackFor('audio');
      const text = player.getTracksFor('text') || [];
      const ti = typeof player.getCurrentTextTrackIndex === 'function' ? player.getCurrentTextTrackIndex() : -1;
      const t = ti >= 0 ? text[ti] : null;
      return {
        audioLanguage: a ? a.lang || null : null,
        audioLanguages: (player.getTracksFor('audio') || []).map((x) => x.lang),
        textLanguage: t ? t.lang || null : null,
        textLanguages: text.map((x) => x.lang),
      };
    };
    player.initialize(video, cfg.url, true);
  }

  // ---------------------------------------------------------- Shaka
  async function startShaka() {
    shaka.polyfill.installAll();
    if (!shaka.Player.isBrowserSupported()) {
      error(true, 'shaka', 'browser not supported');
      return;
    }
    const player = new shaka.Player();
    window.strataPlayer = player;
    await player.attach(video);
    if (cfg.cmcd) player.configure({ cmcd: { enabled: true, useHeaders: cfg.cmcd === 'headers' } });
    // Shaka's documented switch for LL-HLS parts and LL-DASH chunks; off by
    // default, so a site playing LL streams turns it on.
    if (cfg.lowLatency) player.configure({ streaming: { lowLatencyMode: true } });
    if (cfg.remoteLicence) {
      player.configure({ drm: { servers: { 'org.w3.clearkey': cfg.licenseUrl } } });
    } else if (cfg.keys.length) {
      const clearKeys = {};
      for (const k of cfg.keys) clearKeys[k.kid] = k.key;
      player.configure({ drm: { clearKeys } });
    }
    player.addEventListener('error', (e) => {
      const d = e.detail || {};
      // shaka.util.Error.Severity: 1 RECOVERABLE, 2 CRITICAL
      error(d.severity === 2, 'shaka', `code ${d.code} category ${d.category}${d.data ? ': ' + JSON.stringify(d.data).slice(0, 300) : ''}`);
    });
    const videoLevels = () => {
      const seen = new Map();
      for (const t of player.getVariantTracks()) {
        const key = t.videoId !== null && t.videoId !== undefined ? t.videoId : t.id;
        if (!seen.has(key)) seen.set(key, { bandwidth: t.videoBandwidth || t.bandwidth, width: t.width, height: t.height });
      }
      return [...seen.values()];
    };
    currentLevel = () => {
      const t = player.getVariantTracks().find((v) => v.active);
      return t ? { bandwidth: t.videoBandwidth || t.bandwidth, width: t.width || 0, height: t.height || 0 } : null;
    };
    tracks = () => {
      const v = player.getVariantTracks().find((x) => x.active);
      const text = player.getTextTracks();
      const t = text.find((x) => x.active) || null;
      return {
        audioLanguage: v ? v.language || null : null,
        audioLanguages: [...new Set(player.getVariantTracks().map((x) => x.language))],
        textLanguage: t ? t.language || null : null,
        textLanguages: text.map((x) => x.language),
      };
    };
    try {
      await player.load(cfg.url);
    } catch (e) {
      error(true, 'shaka', `load: code ${e.code} category ${e.category}${e.data ? ': ' + JSON.stringify(e.data).slice(0, 300) : ''}`);
      return;
    }
    setLevels(videoLevels());
    play();
  }

  try {
    if (cfg.player === 'hls') startHls();
    else if (cfg.player === 'dash') startDash();
    else if (cfg.player === 'shaka') startShaka().catch((e) => error(true, 'shaka', e.message || e));
  } catch (e) {
    error(true, cfg.player, e.message || e);
  }
})();
