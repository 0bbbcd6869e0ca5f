//! The purge journal: what the disk tier must forget, kept across restarts.
//!
//! A key-value store on disk cannot list what a prefix or a surrogate key
//! selects, so a purge does not look for its victims there: it is written
//! here, and every disk hit asks the journal whether a purge newer than
//! the object selects it. Purges and objects are ordered by the purge
//! *generation* (see [`crate::cache::purge`]): an object carries the
//! generation current when its fill started, and a purge of a higher
//! generation selects it. Generations continue across restarts (a new
//! process starts at the journal's last), so an object stored before a
//! restart is still judged by the purges recorded after it.
//!
//! One JSON line per purge, appended and synced before the purge answers.
//! The oldest records are dropped past [`KEPT`]; a *floor* line then says
//! that every object older than the dropped records is gone (an extra
//! upstream fetch is cheaper than a purge forgotten). A line that does not
//! parse (a crash mid-write) makes the whole tier untrusted: it is cleared.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::cache::key::CacheKey;
use crate::cache::purge::PurgeTarget;

/// Records kept before the oldest half is folded into the floor.
pub const KEPT: usize = 50_000;

/// What a purge record says about one stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No purge since it was stored selects it.
    Keep,
    /// A purge selected it: it is gone.
    Gone,
    /// Soft purges selected it: stale from this time on.
    StaleSince(SystemTime),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Selects {
    Urls(Vec<String>),
    Prefix(String),
    SurrogateKeys(Vec<String>),
    /// Every object older than `generation`.
    Floor,
}

#[derive(Serialize, Deserialize)]
struct Line {
    generation: u64,
    /// Milliseconds since the Unix epoch.
    at: u64,
    #[serde(default)]
    soft: bool,
    selects: Selects,
}

#[derive(Clone, Debug)]
struct Record {
    generation: u64,
    at: SystemTime,
    soft: bool,
    target: PurgeTarget,
}

impl Record {
    fn line(&self) -> Line {
        let selects = match &self.target {
            PurgeTarget::Keys(keys) => {
                Selects::Urls(keys.iter().map(|k| k.as_str().to_owned()).collect())
            }
            PurgeTarget::Prefix(prefix) => Selects::Prefix(prefix.clone()),
            PurgeTarget::SurrogateKeys(tags) => Selects::SurrogateKeys(tags.clone()),
        };
        Line {
            generation: self.generation,
            at: millis(self.at),
            soft: self.soft,
            selects,
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn key_from(url: &str) -> CacheKey {
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    CacheKey::new(path, query, &[])
}

/// The records in force, sorted by generation.
#[derive(Default)]
struct Kept {
    /// Objects of an older generation are gone.
    floor: u64,
    records: Vec<Record>,
}

impl Kept {
    fn last_generation(&self) -> u64 {
        self.records
            .last()
            .map_or(self.floor, |r| r.generation.max(self.floor))
    }

    fn insert(&mut self, record: Record) {
        let at = self
            .records
            .partition_point(|r| r.generation <= record.generation);
        self.records.insert(at, record);
    }

    /// Drop the oldest half once past `kept`; returns whether it did.
    fn fold(&mut self, kept: usize) -> bool {
        if self.records.len() <= kept {
            return false;
        }
        let dropped = self.records.len() - kept / 2;
        if let Some(newest_dropped) = self.records.get(dropped - 1) {
            self.floor = self.floor.max(newest_dropped.generation);
        }
        self.records.drain(..dropped);
        true
    }

    fn verdict(&self, generation: u64, key: &CacheKey, tags: &[String]) -> Verdict {
        if generation < self.floor {
            return Verdict::Gone;
        }
        let newer = self.records.partition_point(|r| r.generation <= generation);
        let mut stale: Option<SystemTime> = None;
        for record in &self.records[newer..] {
            if record.target.matches(key, tags) {
                if !record.soft {
                    return Verdict::Gone;
                }
                stale = Some(stale.map_or(record.at, |s| s.min(record.at)));
            }
        }
        stale.map_or(Verdict::Keep, Verdict::StaleSince)
    }

    fn lines(&self) -> impl Iterator<Item = Line> + '_ {
        let floor = Line {
            generation: self.floor,
            at: millis(SystemTime::now()),
            soft: false,
            selects: Selects::Floor,
        };
        std::iter::once(floor).chain(self.records.iter().map(Record::line))
    }
}

/// The journal file and the records it holds.
pub struct PurgeJournal {
    path: PathBuf,
    // Held to append or rewrite the file (blocking I/O, never on an async
    // task: callers use `spawn_blocking`); it also keeps appends whole.
    file: Mutex<File>,
    // Read on every disk hit, written by purges.
    kept: RwLock<Kept>,
    fold_at: usize,
}

/// A journal just opened.
pub struct Opened {
    pub journal: PurgeJournal,
    /// False when the file held a line that does not parse: the objects on
    /// disk cannot be judged, and the tier must be cleared.
    pub trusted: bool,
}

impl PurgeJournal {
    /// Open (or create) the journal at `path` and read what it holds.
    pub fn open(path: &Path) -> std::io::Result<Opened> {
        Self::open_folding_at(path, KEPT)
    }

    fn open_folding_at(path: &Path, fold_at: usize) -> std::io::Result<Opened> {
        let mut kept = Kept::default();
        let mut trusted = true;
        let mut newest = 0;
        match File::open(path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let Ok(line) = serde_json::from_str::<Line>(&line) else {
                        trusted = false;
                        continue;
                    };
                    newest = newest.max(line.generation);
                    let target = match line.selects {
                        Selects::Floor => {
                            kept.floor = kept.floor.max(line.generation);
                            continue;
                        }
                        Selects::Urls(urls) => {
                            PurgeTarget::Keys(urls.iter().map(|u| key_from(u)).collect())
                        }
                        Selects::Prefix(prefix) => PurgeTarget::Prefix(prefix),
                        Selects::SurrogateKeys(tags) => PurgeTarget::SurrogateKeys(tags),
                    };
                    kept.insert(Record {
                        generation: line.generation,
                        at: SystemTime::UNIX_EPOCH + Duration::from_millis(line.at),
                        soft: line.soft,
                        target,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if !trusted {
            // Whatever the lost lines said, nothing on disk predates this.
            kept = Kept {
                floor: newest + 1,
                records: Vec::new(),
            };
        }
        kept.fold(fold_at);
        // Rewritten whole at every start: drops what was folded and any
        // torn line, and proves the file writable before objects are.
        let file = rewrite(path, &kept)?;
        Ok(Opened {
            journal: PurgeJournal {
                path: path.to_owned(),
                file: Mutex::new(file),
                kept: RwLock::new(kept),
                fold_at,
            },
            trusted,
        })
    }

    /// The newest generation recorded: the next process's purges start after it.
    pub fn last_generation(&self) -> u64 {
        self.kept.read().last_generation()
    }

    /// Record a purge of `generation`, made at `at`. It applies at once to
    /// this process's lookups; the error says it could not be made durable
    /// (the caller must then clear the tier).
    pub fn record(
        &self,
        generation: u64,
        at: SystemTime,
        soft: bool,
        target: PurgeTarget,
    ) -> std::io::Result<()> {
        let record = Record {
            generation,
            at,
            soft,
            target,
        };
        let line = record.line();
        let folded = {
            let mut kept = self.kept.write();
            kept.insert(record);
            kept.fold(self.fold_at)
        };
        let mut file = self.file.lock();
        if folded {
            *file = rewrite(&self.path, &self.kept.read())?;
            return Ok(());
        }
        let mut text = serde_json::to_string(&line).map_err(std::io::Error::other)?;
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }

    /// Whether an object of `generation` under `key`, tagged `tags`, survived
    /// the purges recorded since.
    pub fn verdict(&self, generation: u64, key: &CacheKey, tags: &[String]) -> Verdict {
        self.kept.read().verdict(generation, key, tags)
    }
}

/// Write `kept` to a new file and put it in place of `path`; returns it
/// open for appending.
fn rewrite(path: &Path, kept: &Kept) -> std::io::Result<File> {
    let next = path.with_extension("new");
    {
        let mut out = std::io::BufWriter::new(File::create(&next)?);
        for line in kept.lines() {
            serde_json::to_writer(&mut out, &line).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&next, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> CacheKey {
        key_from(url)
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000 + s)
    }

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "strata-journal-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Dir(dir)
        }

        fn journal(&self) -> PathBuf {
            self.0.join("purges.jsonl")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_purge_selects_only_objects_stored_before_it() {
        let dir = Dir::new("order");
        let journal = PurgeJournal::open(&dir.journal()).expect("open").journal;
        let seg = key("/vod/a/1.m4s");
        journal
            .record(3, at(0), false, PurgeTarget::Prefix("/vod/a/".into()))
            .expect("record");
        assert_eq!(journal.verdict(2, &seg, &[]), Verdict::Gone);
        assert_eq!(
            journal.verdict(3, &seg, &[]),
            Verdict::Keep,
            "fetched after it"
        );
        assert_eq!(journal.verdict(2, &key("/vod/b/1.m4s"), &[]), Verdict::Keep);
        journal
            .record(
                4,
                at(5),
                false,
                PurgeTarget::SurrogateKeys(vec!["t9".into()]),
            )
            .expect("record");
        assert_eq!(
            journal.verdict(3, &key("/x"), &["t9".into()]),
            Verdict::Gone
        );
        assert_eq!(
            journal.verdict(3, &key("/x"), &["t8".into()]),
            Verdict::Keep
        );
        // A URL purge reaches every variant and ignores query order.
        journal
            .record(
                5,
                at(6),
                false,
                PurgeTarget::Keys(vec![key("/m.m3u8?a=1&b=2")]),
            )
            .expect("record");
        let variant = key("/m.m3u8?a=1&b=2").with_variant("accept-language:fr");
        assert_eq!(journal.verdict(4, &variant, &[]), Verdict::Gone);
        assert_eq!(journal.verdict(4, &key("/m.m3u8?a=1"), &[]), Verdict::Keep);
    }

    #[test]
    fn soft_purges_make_stale_from_the_earliest_and_hard_ones_win() {
        let dir = Dir::new("soft");
        let journal = PurgeJournal::open(&dir.journal()).expect("open").journal;
        let seg = key("/live/a/1.m4s");
        journal
            .record(1, at(10), true, PurgeTarget::Prefix("/live/".into()))
            .expect("record");
        journal
            .record(2, at(20), true, PurgeTarget::Prefix("/live/a/".into()))
            .expect("record");
        assert_eq!(journal.verdict(0, &seg, &[]), Verdict::StaleSince(at(10)));
        assert_eq!(journal.verdict(1, &seg, &[]), Verdict::StaleSince(at(20)));
        journal
            .record(3, at(30), false, PurgeTarget::Keys(vec![seg.clone()]))
            .expect("record");
        assert_eq!(journal.verdict(1, &seg, &[]), Verdict::Gone);
    }

    #[test]
    fn records_survive_a_reopen_and_generations_continue() {
        let dir = Dir::new("reopen");
        {
            let journal = PurgeJournal::open(&dir.journal()).expect("open").journal;
            journal
                .record(1, at(0), false, PurgeTarget::Prefix("/a/".into()))
                .expect("record");
            journal
                .record(2, at(1), true, PurgeTarget::SurrogateKeys(vec!["t".into()]))
                .expect("record");
        }
        let opened = PurgeJournal::open(&dir.journal()).expect("reopen");
        assert!(opened.trusted);
        let journal = opened.journal;
        assert_eq!(journal.last_generation(), 2);
        assert_eq!(journal.verdict(0, &key("/a/x"), &[]), Verdict::Gone);
        assert_eq!(
            journal.verdict(1, &key("/b/x"), &["t".into()]),
            Verdict::StaleSince(at(1))
        );
        assert_eq!(journal.verdict(2, &key("/a/x"), &[]), Verdict::Keep);
    }

    #[test]
    fn a_torn_line_makes_everything_older_gone() {
        let dir = Dir::new("torn");
        {
            let journal = PurgeJournal::open(&dir.journal()).expect("open").journal;
            journal
                .record(7, at(0), false, PurgeTarget::Prefix("/a/".into()))
                .expect("record");
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.journal())
            .expect("append");
        file.write_all(b"{\"generation\":8,\"at\":1,\"sel")
            .expect("write");
        drop(file);
        let opened = PurgeJournal::open(&dir.journal()).expect("reopen");
        assert!(!opened.trusted, "the tier must be cleared");
        let journal = opened.journal;
        assert_eq!(journal.verdict(7, &key("/b/x"), &[]), Verdict::Gone);
        assert_eq!(journal.last_generation(), 8);
        assert_eq!(journal.verdict(8, &key("/b/x"), &[]), Verdict::Keep);
        // The file was rewritten whole: the next open trusts it.
        assert!(PurgeJournal::open(&dir.journal()).expect("again").trusted);
    }

    #[test]
    fn folding_the_oldest_records_keeps_every_purge_in_force() {
        let dir = Dir::new("fold");
        let journal = PurgeJournal::open_folding_at(&dir.journal(), 4)
            .expect("open")
            .journal;
        for g in 1..=5 {
            journal
                .record(g, at(g), false, PurgeTarget::Prefix(format!("/p{g}/")))
                .expect("record");
        }
        // Generations 1..=3 were folded into the floor: an object older
        // than 3 is gone whatever it is; newer ones are judged as before.
        assert_eq!(journal.verdict(2, &key("/elsewhere"), &[]), Verdict::Gone);
        assert_eq!(journal.verdict(3, &key("/elsewhere"), &[]), Verdict::Keep);
        assert_eq!(journal.verdict(3, &key("/p5/x"), &[]), Verdict::Gone);
        drop(journal);
        let journal = PurgeJournal::open_folding_at(&dir.journal(), 4)
            .expect("reopen")
            .journal;
        assert_eq!(journal.last_generation(), 5);
        assert_eq!(journal.verdict(2, &key("/elsewhere"), &[]), Verdict::Gone);
        assert_eq!(journal.verdict(4, &key("/p5/x"), &[]), Verdict::Gone);
        assert_eq!(journal.verdict(4, &key("/p4/x"), &[]), Verdict::Keep);
    }
}
