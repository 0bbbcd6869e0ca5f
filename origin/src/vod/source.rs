//! Where a title's bytes come from: a file under `vod.root`, or an object
//! of a remote store. Both answer the same two reads — "up to n bytes at"
//! (walking box headers) and "these byte ranges" (a segment's samples) —
//! so indexing and packaging do not know which they read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};
use std::sync::Arc;

use bytes::Bytes;

use super::mp4::Mp4Error;
use super::remote::{RemoteError, RemoteObject, RemoteStore, RemoteStoreConfig};
use super::VodError;

pub enum Source {
    Local(File),
    Remote(Arc<RemoteObject>),
}

impl Source {
    /// Up to `n` bytes at `at`, fewer at the end. A remote failure travels
    /// inside the `io::Error` and comes back out through [`from_io`].
    pub fn read_upto(&self, at: u64, n: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Source::Local(file) => read_upto(file, at, n),
            Source::Remote(object) => object.read_upto(at, n).map_err(std::io::Error::other),
        }
    }

    /// The bytes of each `start..end` run.
    pub fn read_runs(&self, runs: &[(u64, u64)]) -> Result<Vec<Bytes>, VodError> {
        match self {
            Source::Local(file) => runs
                .iter()
                .map(|&(start, end)| {
                    let mut run = vec![0u8; (end - start) as usize];
                    file.read_exact_at(&mut run, start).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            // The file shrank since it was indexed.
                            VodError::Mp4(Mp4Error::Corrupt(format!(
                                "samples at bytes {start}..{end} lie past the end of the file"
                            )))
                        } else {
                            VodError::Io(e)
                        }
                    })?;
                    Ok(Bytes::from(run))
                })
                .collect(),
            Source::Remote(object) => Ok(object.read_ranges(runs)?),
        }
    }
}

/// An `io::Error` from [`Source::read_upto`] as the [`VodError`] it stands for.
pub fn from_io(e: std::io::Error) -> VodError {
    if e.get_ref().is_some_and(|inner| inner.is::<RemoteError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(remote) = inner.downcast::<RemoteError>() {
                return VodError::Remote(*remote);
            }
        }
        return VodError::Io(std::io::Error::other("remote read failed"));
    }
    VodError::Io(e)
}

/// The store whose prefix is `title`'s first component, and the object key
/// (the rest, `/`-joined; the request parser allowed plain components only).
pub fn remote_key<'a>(
    stores: &'a [Arc<RemoteStore>],
    title: &Path,
) -> Option<(&'a Arc<RemoteStore>, String)> {
    let mut parts = title.components();
    let Some(Component::Normal(first)) = parts.next() else {
        return None;
    };
    let store = stores.iter().find(|s| first == s.config.prefix.as_str())?;
    let key: Vec<&str> = parts
        .map(|c| match c {
            Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!key.is_empty()).then(|| (store, key.join("/")))
}

/// Every store valid, no prefix twice.
pub fn validate_stores(stores: &[RemoteStoreConfig]) -> Result<(), String> {
    for (i, store) in stores.iter().enumerate() {
        store.validate()?;
        if stores[..i].iter().any(|s| s.prefix == store.prefix) {
            return Err(format!(
                "vod.remote: prefix {:?} is used by two stores",
                store.prefix
            ));
        }
    }
    Ok(())
}

/// Up to `n` bytes at `at` (fewer at the end of the file).
pub fn read_upto(file: &File, at: u64, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}
