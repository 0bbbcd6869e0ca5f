//! Log output that keeps the request path free of write syscalls.
//!
//! Every request writes an access-log line. Formatting it is cheap; writing it
//! to stdout under the stdout lock, one `write(2)` per line, is not: at tens of
//! thousands of requests a second that syscall cost more than serving a small
//! cached object. Waking a writer thread for every line is no better on a
//! two-core node (a futex wake and a context switch per line). So each event is
//! formatted on the request's thread and appended to one shared buffer under a
//! short lock; a writer thread takes the whole buffer every
//! [`FLUSH_EVERY`] (sooner when it passes [`WAKE_AT`]) and writes it in one call.
//! Lines reach the log at most a few milliseconds late.
//!
//! The buffer is bounded ([`CAP`]) and writers wait when it is full: under
//! overload the log slows requests down rather than dropping lines. Dropping
//! the [`LogGuard`] writes out what is left.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often the writer thread looks for lines.
const FLUSH_EVERY: Duration = Duration::from_millis(25);
/// Buffered bytes at which a writer wakes the writer thread early.
const WAKE_AT: usize = 256 * 1024;
/// Buffered bytes at which writers wait for the writer thread.
const CAP: usize = 8 * 1024 * 1024;

/// Sets up `tracing` for the `strata` binary: `RUST_LOG` filter (default
/// `info`), colour only on a terminal, output through the writer thread.
pub fn init() -> LogGuard {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let (writer, guard) = spawn(io::stdout());
    let _ = SINK.set(writer.shared.clone());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(io::IsTerminal::is_terminal(&io::stdout()))
        .with_writer(writer)
        .try_init();
    guard
}

/// The binary's log buffer, once [`init`] ran: the access log writes its
/// lines straight into it.
static SINK: std::sync::OnceLock<Arc<Shared>> = std::sync::OnceLock::new();

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer thread waits here for [`FLUSH_EVERY`] or an early wake.
    wake: Condvar,
    /// Writers wait here while the buffer is over [`CAP`].
    room: Condvar,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A writer that panicked mid-append leaves at worst a torn line.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.lock();
        while state.buf.len() >= CAP && !state.stopping {
            state = self
                .room
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.buf.extend_from_slice(line);
        if state.buf.len() >= WAKE_AT {
            self.wake.notify_one();
        }
    }
}

/// A writer thread for `out`; the [`MakeWriter`] half goes to the subscriber.
pub fn spawn<W: Write + Send + 'static>(out: W) -> (BufferedWriter, LogGuard) {
    let shared = Arc::new(Shared::default());
    let drainer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("strata-log".into())
        .spawn(move || drain(&drainer, out));
    let thread = match thread {
        Ok(thread) => Some(thread),
        Err(e) => {
            eprintln!("strata: no log writer thread ({e}); log lines are dropped");
            shared.lock().stopping = true;
            None
        }
    };
    (
        BufferedWriter {
            shared: shared.clone(),
        },
        LogGuard { shared, thread },
    )
}

fn drain<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::new();
    loop {
        let stopping = {
            let mut state = shared.lock();
            if !state.stopping {
                state = shared
                    .wake
                    .wait_timeout(state, FLUSH_EVERY)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
            std::mem::swap(&mut state.buf, &mut spare);
            shared.room.notify_all();
            state.stopping
        };
        if !spare.is_empty() {
            // Nowhere left to report a failing log sink; keep serving.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
        }
        if stopping {
            return;
        }
    }
}

/// The subscriber's side: each event is formatted into its own buffer, then
/// appended whole, so lines never interleave.
#[derive(Clone)]
pub struct BufferedWriter {
    shared: Arc<Shared>,
}

impl<'a> MakeWriter<'a> for BufferedWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
            buf: Vec::new(),
        }
    }
}

/// One event's bytes, appended when dropped.
pub struct Line<'a> {
    shared: &'a Shared,
    buf: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.shared.append(&self.buf);
        }
    }
}

/// Keep it alive in `main`: dropping it writes out every line logged so far
/// and stops the writer thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One access-log line per request, in the same shape `tracing`'s default
/// format gives every other line (`{time}  INFO strata::access: key=value …`)
/// so one parser reads the whole log, but written by hand: the generic event
/// formatter was ~6% of the CPU time of a cached 1 KiB hit. Without [`init`]
/// (tests, embedders) the line goes out as a `tracing` event instead.
pub struct AccessLine<'a> {
    pub client: std::net::IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub cache: &'a str,
    pub bytes: u64,
    pub elapsed: Duration,
    pub upstream: &'a str,
    pub protocol: &'a str,
    pub complete: bool,
    pub reason: &'a str,
}

impl AccessLine<'_> {
    pub fn emit(&self) {
        if !tracing::enabled!(target: "strata::access", tracing::Level::INFO) {
            return;
        }
        let Some(sink) = SINK.get() else {
            tracing::info!(
                target: "strata::access",
                client = %self.client,
                method = %self.method,
                path = %self.path,
                status = self.status,
                cache = self.cache,
                bytes = self.bytes,
                ms = %Millis(self.elapsed),
                upstream = self.upstream,
                protocol = self.protocol,
                complete = self.complete,
                reason = self.reason,
            );
            return;
        };
        let mut line = String::with_capacity(256);
        self.format(std::time::SystemTime::now(), &mut line);
        sink.append(line.as_bytes());
    }

    fn format(&self, now: std::time::SystemTime, out: &mut String) {
        use std::fmt::Write as _;
        rfc3339_micros(now, out);
        let _ = writeln!(
            out,
            "  INFO strata::access: client={} method={} path={} status={} cache={:?} bytes={} ms={} upstream={:?} protocol={:?} complete={} reason={:?}",
            self.client,
            self.method,
            self.path,
            self.status,
            self.cache,
            self.bytes,
            Millis(self.elapsed),
            self.upstream,
            self.protocol,
            self.complete,
            self.reason,
        );
    }
}

/// A duration in milliseconds with fixed precision (`0.727`, `1250.000`):
/// microseconds, the resolution worth reading, and never float noise.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// `2026-11-25T12:05:45.112184Z`, UTC.
fn rfc3339_micros(t: std::time::SystemTime, out: &mut String) {
    use std::fmt::Write as _;
    let c = strata_origin::package::Civil::utc(t);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn access_lines_read_like_the_other_log_lines() {
        let line = AccessLine {
            client: [127, 0, 0, 1].into(),
            method: "GET",
            path: "/live/a/1.m4s",
            status: 200,
            cache: "hit",
            bytes: 1024,
            elapsed: Duration::from_micros(41),
            upstream: "-",
            protocol: "h1",
            complete: true,
            reason: "-",
        };
        let mut out = String::new();
        let t = std::time::UNIX_EPOCH + Duration::from_micros(1_795_608_345_112_184);
        line.format(t, &mut out);
        assert_eq!(
            out,
            "2026-11-25T12:05:45.112184Z  INFO strata::access: client=127.0.0.1 method=GET \
             path=/live/a/1.m4s status=200 cache=\"hit\" bytes=1024 ms=0.041 upstream=\"-\" \
             protocol=\"h1\" complete=true reason=\"-\"\n"
        );
        let mut leap = String::new();
        rfc3339_micros(
            std::time::UNIX_EPOCH + Duration::from_secs(951_782_400),
            &mut leap,
        );
        assert_eq!(leap, "2000-02-29T00:00:00.000000Z");
    }

    /// Issue 13: `ms=0.7273820000000001` was float noise; three decimals, always.
    #[test]
    fn durations_have_fixed_precision() {
        let line = AccessLine {
            client: [127, 0, 0, 1].into(),
            method: "GET",
            path: "/a.m3u8",
            status: 200,
            cache: "hit",
            bytes: 1,
            elapsed: Duration::from_nanos(727_382),
            upstream: "-",
            protocol: "h1",
            complete: true,
            reason: "-",
        };
        let mut out = String::new();
        line.format(std::time::UNIX_EPOCH, &mut out);
        assert!(out.contains(" ms=0.727 "), "{out}");
        for (elapsed, ms) in [
            (Duration::from_nanos(727_382), "0.727"),
            (Duration::from_nanos(727_999), "0.727"),
            (Duration::from_micros(1), "0.001"),
            (Duration::ZERO, "0.000"),
            (Duration::from_millis(1250), "1250.000"),
            (Duration::from_micros(12_345_678), "12345.678"),
        ] {
            assert_eq!(Millis(elapsed).to_string(), ms, "{elapsed:?}");
        }
    }

    #[test]
    fn every_line_is_written_in_order_before_the_guard_returns() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone());
        for i in 0..10_000 {
            let mut line = writer.make_writer();
            writeln!(line, "line {i}").expect("write");
        }
        drop(guard);
        let bytes = sink.0.lock().expect("sink").clone();
        let text = String::from_utf8(bytes).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
    }
}
