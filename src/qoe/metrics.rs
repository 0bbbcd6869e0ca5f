//! `strata_qoe_*`: what players experience, in Prometheus form.
//!
//! Label sets are bounded by construction: `cdn` is one of the configured
//! pathway ids (or `other`), `country` an ISO code from the geo database (or
//! `unknown`), `protocol` `h1`/`h2`/`h3`, `format` and `object` the CMCD
//! tokens' fixed sets. Session and content ids are never labels; a session
//! id rides along as an exemplar on the startup-time histogram.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::cmcd::{ObjectType, StreamingFormat};

/// Labels of per-request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewerLabels {
    pub cdn: String,
    pub protocol: &'static str,
    pub country: String,
}

/// Labels of `strata_qoe_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub cdn: String,
    pub protocol: &'static str,
    pub country: String,
    /// `hls`, `dash`, `smooth`, `other`, `unknown`
    pub format: &'static str,
    /// `manifest`, `audio`, `video`, `muxed`, `init`, `caption`, `timed-text`, `key`, `other`, `unknown`
    pub object: &'static str,
}

/// Labels of histograms and per-session series: fewer, to keep bucket counts sane.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaceLabels {
    pub cdn: String,
    pub country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub cdn: String,
    pub country: String,
    /// `true` when the player gave up (fatal error, CMCD `sta=f`).
    pub fatal: &'static str,
}

/// Labels of the malformed-input counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MalformedLabels {
    /// `query`, `header`, `beacon`
    pub source: &'static str,
    /// `too-long`, `encoding`, `syntax`, `value`, `json` (beacons)
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BeaconLabels {
    /// `ok`, `bad`
    pub outcome: &'static str,
}

/// The exemplar on the startup histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionExemplar {
    pub session: String,
}

type Hist = Family<PlaceLabels, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, AtomicU64>;

/// Every `strata_qoe_*` family.
pub struct QoeMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub starvation: Family<ViewerLabels, Counter>,
    pub startup_requests: Family<ViewerLabels, Counter>,
    pub buffer_length: Hist,
    pub throughput: Hist,
    pub bitrate: Hist,
    pub deadline: Hist,
    pub startup: Family<
        PlaceLabels,
        HistogramWithExemplars<SessionExemplar>,
        fn() -> HistogramWithExemplars<SessionExemplar>,
    >,
    pub sessions_active: Family<PlaceLabels, Gauge>,
    pub sessions_started: Family<PlaceLabels, Counter>,
    pub sessions_untracked: Counter,
    pub watch: Family<PlaceLabels, FloatCounter>,
    pub rebuffer: Family<PlaceLabels, FloatCounter>,
    pub rebuffers: Family<PlaceLabels, Counter>,
    pub bitrate_switches: Family<PlaceLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub malformed: Family<MalformedLabels, Counter>,
    pub beacons: Family<BeaconLabels, Counter>,
}

fn seconds_histogram() -> Histogram {
    Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0])
}

fn throughput_histogram() -> Histogram {
    // 250 kbit/s … 256 Mbit/s
    Histogram::new(exponential_buckets(250_000.0, 2.0, 11))
}

fn bitrate_histogram() -> Histogram {
    // 100 kbit/s … 25.6 Mbit/s: one bucket per rung of a typical ladder.
    Histogram::new(exponential_buckets(100_000.0, 2.0, 9))
}

fn startup_histogram() -> HistogramWithExemplars<SessionExemplar> {
    HistogramWithExemplars::new([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0].into_iter())
}

impl QoeMetrics {
    pub fn register(registry: &mut Registry) -> QoeMetrics {
        let m = QoeMetrics {
            requests: Family::default(),
            starvation: Family::default(),
            startup_requests: Family::default(),
            buffer_length: Family::new_with_constructor(seconds_histogram),
            throughput: Family::new_with_constructor(throughput_histogram),
            bitrate: Family::new_with_constructor(bitrate_histogram),
            deadline: Family::new_with_constructor(seconds_histogram),
            startup: Family::new_with_constructor(startup_histogram),
            sessions_active: Family::default(),
            sessions_started: Family::default(),
            sessions_untracked: Counter::default(),
            watch: Family::default(),
            rebuffer: Family::default(),
            rebuffers: Family::default(),
            bitrate_switches: Family::default(),
            errors: Family::default(),
            malformed: Family::default(),
            beacons: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("strata_qoe");
        r.register(
            "requests",
            "Requests that carried CMCD, by CDN/pathway, protocol, country, streaming format (sf) and object type (ot)",
            m.requests.clone(),
        );
        r.register(
            "buffer_starvation",
            "Requests whose CMCD said the buffer ran dry since the previous one (bs)",
            m.starvation.clone(),
        );
        r.register(
            "startup_requests",
            "Requests for objects needed to start or resume playback (su)",
            m.startup_requests.clone(),
        );
        r.register(
            "buffer_length_seconds",
            "Player buffer length when it asked for a video object (bl)",
            m.buffer_length.clone(),
        );
        r.register(
            "measured_throughput_bits_per_second",
            "Throughput the player measured (mtp)",
            m.throughput.clone(),
        );
        r.register(
            "encoded_bitrate_bits_per_second",
            "Encoded bitrate of the video objects players asked for (br), and of bitrate switches beaconed",
            m.bitrate.clone(),
        );
        r.register(
            "deadline_seconds",
            "Time the player had left before it needed the object (dl)",
            m.deadline.clone(),
        );
        r.register(
            "startup_seconds",
            "Time from a session's first request to playback (msd, the beacon's start, or the first request no longer flagged su)",
            m.startup.clone(),
        );
        r.register(
            "sessions_active",
            "Playback sessions (CMCD sid) seen within qoe.session_idle",
            m.sessions_active.clone(),
        );
        r.register(
            "sessions_started",
            "Playback sessions seen for the first time",
            m.sessions_started.clone(),
        );
        r.register(
            "sessions_untracked",
            "Requests of new sessions not tracked because qoe.max_sessions were live",
            m.sessions_untracked.clone(),
        );
        r.register(
            "watch_seconds",
            "Time sessions spent after startup (playing or stalled); the rebuffer ratio's denominator",
            m.watch.clone(),
        );
        r.register(
            "rebuffer_seconds",
            "Time sessions spent stalled after startup",
            m.rebuffer.clone(),
        );
        r.register(
            "rebuffers",
            "Stalls after startup (a session's first bs, beacon rebuffer_start, or sta=r)",
            m.rebuffers.clone(),
        );
        r.register(
            "bitrate_switches",
            "Changes of a session's video bitrate",
            m.bitrate_switches.clone(),
        );
        r.register(
            "player_errors",
            "Errors players reported (beacon error, CMCD e=e, ec, sta=f)",
            m.errors.clone(),
        );
        r.register(
            "malformed",
            "CMCD payloads and beacons ignored as malformed, by source and reason",
            m.malformed.clone(),
        );
        r.register(
            "beacons",
            "Beacon POSTs, by outcome (ok, bad)",
            m.beacons.clone(),
        );
        m
    }

    /// Make the series a quiet edge still exports at 0, so dashboards and
    /// alerts see 0 rather than no data.
    pub fn initialise(&self, cdn: &str) {
        for source in ["query", "header", "beacon"] {
            for reason in ["too-long", "encoding", "syntax", "value"] {
                touch(&self.malformed, &MalformedLabels { source, reason });
            }
        }
        let json = MalformedLabels {
            source: "beacon",
            reason: "json",
        };
        touch(&self.malformed, &json);
        for outcome in ["ok", "bad"] {
            touch(&self.beacons, &BeaconLabels { outcome });
        }
        let place = PlaceLabels {
            cdn: cdn.to_owned(),
            country: UNKNOWN.to_owned(),
        };
        touch(&self.sessions_active, &place);
        touch(&self.sessions_started, &place);
        touch(&self.watch, &place);
        touch(&self.rebuffer, &place);
        touch(&self.rebuffers, &place);
        touch(&self.bitrate_switches, &place);
        for fatal in ["true", "false"] {
            let labels = ErrorLabels {
                cdn: cdn.to_owned(),
                country: UNKNOWN.to_owned(),
                fatal,
            };
            touch(&self.errors, &labels);
        }
        for protocol in PROTOCOLS {
            let viewer = ViewerLabels {
                cdn: cdn.to_owned(),
                protocol,
                country: UNKNOWN.to_owned(),
            };
            touch(&self.starvation, &viewer);
            touch(&self.startup_requests, &viewer);
        }
    }
}

/// Create a series (at 0) without recording anything.
fn touch<L, M, C>(family: &Family<L, M, C>, labels: &L)
where
    L: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    let _ = family.get_or_create(labels);
}

/// The country label when the geo database has none (or there is no database).
pub const UNKNOWN: &str = "unknown";

/// Where a request or event came from, as small indices: the key of [`Cells`].
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Place {
    /// Index into the configured pathways; `pathways.len()` is `other`.
    pub cdn: u16,
    /// 0 `h1`, 1 `h2`, 2 `h3`.
    pub protocol: u8,
    /// ISO code bytes, `[0, 0]` when unknown.
    pub country: [u8; 2],
}

const PROTOCOLS: [&str; 3] = ["h1", "h2", "h3"];

/// Handles into [`QoeMetrics`] for one [`Place`], resolved once, so recording
/// a request bumps atomics instead of hashing label sets of strings.
pub struct Cell {
    pub place: PlaceLabels,
    /// `[format][object]`, the last of each being `unknown`.
    requests: Box<[OnceLock<Counter>]>,
    viewer: ViewerLabels,
    pub starvation: Counter,
    pub startup_requests: Counter,
    pub buffer_length: Histogram,
    pub throughput: Histogram,
    pub bitrate: Histogram,
    pub deadline: Histogram,
    pub startup: HistogramWithExemplars<SessionExemplar>,
    pub sessions_active: Gauge,
    pub sessions_started: Counter,
    pub watch: FloatCounter,
    pub rebuffer: FloatCounter,
    pub rebuffers: Counter,
    pub bitrate_switches: Counter,
    pub errors: Counter,
    pub fatal_errors: Counter,
}

const FORMATS: usize = StreamingFormat::ALL.len() + 1;
const OBJECTS: usize = ObjectType::ALL.len() + 1;

impl Cell {
    fn new(m: &QoeMetrics, cdn: &str, protocol: &'static str, country: &str) -> Cell {
        let place = PlaceLabels {
            cdn: cdn.to_owned(),
            country: country.to_owned(),
        };
        let viewer = ViewerLabels {
            cdn: cdn.to_owned(),
            protocol,
            country: country.to_owned(),
        };
        let error = |fatal| ErrorLabels {
            cdn: cdn.to_owned(),
            country: country.to_owned(),
            fatal,
        };
        // One statement per handle: `get_or_create` returns a read guard,
        // and a second one on the same family in one expression would wait
        // for it to insert.
        let errors = m.errors.get_or_create(&error("false")).clone();
        let fatal_errors = m.errors.get_or_create(&error("true")).clone();
        let starvation = m.starvation.get_or_create(&viewer).clone();
        let startup_requests = m.startup_requests.get_or_create(&viewer).clone();
        let buffer_length = m.buffer_length.get_or_create(&place).clone();
        let throughput = m.throughput.get_or_create(&place).clone();
        let bitrate = m.bitrate.get_or_create(&place).clone();
        let deadline = m.deadline.get_or_create(&place).clone();
        let startup = m.startup.get_or_create(&place).clone();
        let sessions_active = m.sessions_active.get_or_create(&place).clone();
        let sessions_started = m.sessions_started.get_or_create(&place).clone();
        let watch = m.watch.get_or_create(&place).clone();
        let rebuffer = m.rebuffer.get_or_create(&place).clone();
        let rebuffers = m.rebuffers.get_or_create(&place).clone();
        let bitrate_switches = m.bitrate_switches.get_or_create(&place).clone();
        Cell {
            requests: (0..FORMATS * OBJECTS).map(|_| OnceLock::new()).collect(),
            starvation,
            startup_requests,
            buffer_length,
            throughput,
            bitrate,
            deadline,
            startup,
            sessions_active,
            sessions_started,
            watch,
            rebuffer,
            rebuffers,
            bitrate_switches,
            errors,
            fatal_errors,
            viewer,
            place,
        }
    }

    /// Count one CMCD-carrying request.
    pub fn request(
        &self,
        m: &QoeMetrics,
        format: Option<StreamingFormat>,
        object: Option<ObjectType>,
    ) {
        let f = format.map_or(FORMATS - 1, StreamingFormat::index);
        let o = object.map_or(OBJECTS - 1, ObjectType::index);
        self.requests[f * OBJECTS + o]
            .get_or_init(|| {
                let labels = RequestLabels {
                    cdn: self.viewer.cdn.clone(),
                    protocol: self.viewer.protocol,
                    country: self.viewer.country.clone(),
                    format: format.map_or("unknown", StreamingFormat::as_str),
                    object: object.map_or("unknown", ObjectType::as_str),
                };
                m.requests.get_or_create(&labels).clone()
            })
            .inc();
    }
}

/// The resolved [`Cell`] of every [`Place`] seen so far (bounded: pathways ×
/// 3 protocols × countries).
pub struct Cells {
    pathways: Vec<String>,
    // Read on every request, written once per new place.
    cells: RwLock<HashMap<Place, Arc<Cell>, foldhash::fast::RandomState>>,
}

impl Cells {
    pub fn new(pathways: Vec<String>) -> Cells {
        Cells {
            pathways,
            cells: RwLock::new(HashMap::default()),
        }
    }

    pub fn get(&self, m: &QoeMetrics, place: Place) -> Arc<Cell> {
        if let Some(cell) = self.cells.read().get(&place) {
            return cell.clone();
        }
        let cdn = self
            .pathways
            .get(usize::from(place.cdn))
            .map_or("other", String::as_str);
        let country = match place.country {
            [0, 0] => UNKNOWN.to_owned(),
            code => String::from_utf8_lossy(&code).into_owned(),
        };
        let protocol = PROTOCOLS[usize::from(place.protocol).min(2)];
        let cell = Arc::new(Cell::new(m, cdn, protocol, &country));
        self.cells.write().entry(place).or_insert(cell).clone()
    }
}
