//! CENC boxes parsed back field by field (ISO/IEC 23001-7, 14496-12), and
//! protected fragments of real H.264/AAC that decrypt back to the clear bytes.

use aes::cipher::{BlockDecrypt, KeyInit as _};
use bytes::Bytes;

use super::*;
use crate::media::{fmp4, MediaEvent, Sample, TrackParams};

const DEMO: &[u8] = include_bytes!("../../../assets/demo.flv");
const KID: [u8; 16] = [0x11; 16];
const KEY: [u8; 16] = *b"0123456789abcdef";
const IV: [u8; 16] = [0x42; 16];

fn clip() -> (Vec<TrackParams>, Vec<Sample>, Vec<Sample>) {
    let (mut params, mut video, mut audio) = (Vec::new(), Vec::new(), Vec::new());
    for e in crate::media::flv::file_events(Bytes::from_static(DEMO)).expect("flv") {
        match e {
            MediaEvent::Params(p) => params.push(p),
            MediaEvent::Sample(TrackKind::Video, s) => video.push(s),
            MediaEvent::Sample(TrackKind::Audio, s) => audio.push(s),
        }
    }
    (params, video, audio)
}

fn params(all: &[TrackParams], kind: TrackKind) -> TrackParams {
    all.iter()
        .find(|p| p.kind() == kind)
        .expect("params")
        .clone()
}

fn protection(scheme: Scheme, kind: TrackKind) -> TrackProtection {
    TrackProtection {
        scheme,
        kind,
        kid: KID,
        key: KEY,
        constant_iv: IV,
        pssh: vec![Pssh {
            system_id: COMMON_SYSTEM_ID,
            kids: vec![KID],
            data: Vec::new(),
        }],
        in_band: false,
    }
}

fn one(data: &[u8], fourcc: &[u8; 4]) -> BoxRange {
    let all = boxes(data, 0, data.len()).expect("boxes");
    assert_eq!(all.len(), 1);
    assert_eq!(&all[0].fourcc, fourcc);
    all[0]
}

fn find(data: &[u8], path: &[&[u8; 4]]) -> BoxRange {
    let mut range = BoxRange {
        fourcc: *b"root",
        start: 0,
        body: 0,
        end: data.len(),
    };
    for fourcc in path {
        // stsd and sample entries have headers before their children.
        let skip = match &range.fourcc {
            b"stsd" => 8,
            b"encv" | b"avc1" => 78,
            b"enca" | b"mp4a" => 28,
            b"schm" | b"tenc" => 4,
            _ => 0,
        };
        range = boxes(data, range.body + skip, range.end)
            .expect("children")
            .into_iter()
            .find(|b| &b.fourcc == *fourcc)
            .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(*fourcc)));
    }
    range
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[test]
fn tenc_for_cbcs_is_version_1_with_pattern_and_constant_iv() {
    let mut buf = BytesMut::new();
    write_tenc(&mut buf, &protection(Scheme::Cbcs, TrackKind::Video));
    let b = one(&buf, b"tenc");
    assert_eq!(buf[b.body], 1, "version 1");
    let f = b.body + 4;
    assert_eq!(buf[f], 0, "reserved");
    assert_eq!(buf[f + 1], 0x19, "crypt 1, skip 9");
    assert_eq!(buf[f + 2], 1, "isProtected");
    assert_eq!(buf[f + 3], 0, "per-sample IV size");
    assert_eq!(&buf[f + 4..f + 20], &KID);
    assert_eq!(buf[f + 20], 16, "constant IV size");
    assert_eq!(&buf[f + 21..f + 37], &IV);
    assert_eq!(b.end, f + 37);
}

#[test]
fn tenc_for_cenc_is_version_0_with_8_byte_ivs() {
    let mut buf = BytesMut::new();
    write_tenc(&mut buf, &protection(Scheme::Cenc, TrackKind::Audio));
    let b = one(&buf, b"tenc");
    assert_eq!(&buf[b.body..b.body + 4], &[0, 0, 0, 0]);
    assert_eq!(&buf[b.body + 4..b.body + 8], &[0, 0, 1, 8]);
    assert_eq!(&buf[b.body + 8..b.body + 24], &KID);
    assert_eq!(b.end, b.body + 24);
}

#[test]
fn sinf_holds_frma_schm_schi() {
    let mut buf = BytesMut::new();
    write_sinf(
        &mut buf,
        b"avc1",
        &protection(Scheme::Cbcs, TrackKind::Video),
    );
    let sinf = one(&buf, b"sinf");
    let kids: Vec<[u8; 4]> = boxes(&buf, sinf.body, sinf.end)
        .expect("children")
        .iter()
        .map(|b| b.fourcc)
        .collect();
    assert_eq!(kids, [*b"frma", *b"schm", *b"schi"]);
    let frma = find(&buf, &[b"sinf", b"frma"]);
    assert_eq!(&buf[frma.body..frma.end], b"avc1");
    let schm = find(&buf, &[b"sinf", b"schm"]);
    assert_eq!(&buf[schm.body + 4..schm.body + 8], b"cbcs");
    assert_eq!(u32_at(&buf, schm.body + 8), 0x0001_0000);
    find(&buf, &[b"sinf", b"schi", b"tenc"]);
}

#[test]
fn pssh_version_1_lists_key_ids() {
    let mut buf = BytesMut::new();
    let pssh = Pssh {
        system_id: WIDEVINE_SYSTEM_ID,
        kids: vec![KID, [0x22; 16]],
        data: vec![1, 2, 3],
    };
    write_pssh(&mut buf, &pssh);
    let b = one(&buf, b"pssh");
    assert_eq!(buf[b.body], 1);
    assert_eq!(&buf[b.body + 4..b.body + 20], &WIDEVINE_SYSTEM_ID);
    assert_eq!(u32_at(&buf, b.body + 20), 2);
    assert_eq!(&buf[b.body + 24..b.body + 40], &KID);
    assert_eq!(u32_at(&buf, b.body + 56), 3);
    assert_eq!(&buf[b.body + 60..b.end], &[1, 2, 3]);
    let mut v0 = BytesMut::new();
    write_pssh(
        &mut v0,
        &Pssh {
            kids: vec![],
            ..pssh
        },
    );
    assert_eq!(v0[8], 0, "no key IDs: version 0");
    assert_eq!(v0.len(), 8 + 4 + 16 + 4 + 3);
}

#[test]
fn senc_saiz_saio_layouts() {
    let infos = vec![
        SampleAuxInfo {
            iv: vec![1; 8],
            subsamples: vec![(5, 32), (7, 0)],
        },
        SampleAuxInfo {
            iv: vec![2; 8],
            subsamples: vec![(5, 16)],
        },
    ];
    let mut buf = BytesMut::new();
    let first = write_senc(&mut buf, &infos);
    let senc = one(&buf, b"senc");
    assert_eq!(u32_at(&buf, senc.body), 0x2, "subsample flag");
    assert_eq!(u32_at(&buf, senc.body + 4), 2);
    assert_eq!(first, senc.body + 8);
    assert_eq!(&buf[first..first + 8], &[1; 8]);
    assert_eq!(&buf[first + 8..first + 10], &[0, 2]);
    assert_eq!(&buf[first + 10..first + 12], &[0, 5]);
    assert_eq!(u32_at(&buf, first + 12), 32);
    assert_eq!(senc.end, first + (8 + 2 + 12) + (8 + 2 + 6));

    let mut saiz = BytesMut::new();
    write_saiz(&mut saiz, &infos);
    let b = one(&saiz, b"saiz");
    assert_eq!(saiz[b.body + 4], 0, "sizes differ: no default");
    assert_eq!(u32_at(&saiz, b.body + 5), 2);
    assert_eq!(&saiz[b.body + 9..b.end], &[22, 16]);

    let mut saio = BytesMut::new();
    write_saio(&mut saio, 1234);
    let b = one(&saio, b"saio");
    assert_eq!(u32_at(&saio, b.body + 4), 1);
    assert_eq!(u32_at(&saio, b.body + 8), 1234);
}

#[test]
fn protected_init_has_encv_with_sinf_and_pssh_and_consistent_sizes() {
    let (all, _, _) = clip();
    for (kind, clear_fourcc, protected_fourcc) in [
        (TrackKind::Video, b"avc1", b"encv"),
        (TrackKind::Audio, b"mp4a", b"enca"),
    ] {
        let clear = fmp4::init_segment(1, &params(&all, kind));
        let protected =
            protect_init(&clear, &protection(Scheme::Cenc, kind)).expect("protect init");
        let path = [
            b"moov",
            b"trak",
            b"mdia",
            b"minf",
            b"stbl",
            b"stsd",
            protected_fourcc,
        ];
        let entry = find(&protected, &path);
        let frma = find(
            &protected,
            &[
                b"moov",
                b"trak",
                b"mdia",
                b"minf",
                b"stbl",
                b"stsd",
                protected_fourcc,
                b"sinf",
                b"frma",
            ],
        );
        assert_eq!(&protected[frma.body..frma.end], clear_fourcc);
        assert!(entry.end <= protected.len());
        let pssh = find(&protected, &[b"moov", b"pssh"]);
        assert_eq!(&protected[pssh.body + 4..pssh.body + 20], &COMMON_SYSTEM_ID);
        // Every size still tiles its parent.
        let top = boxes(&protected, 0, protected.len()).expect("top level");
        assert_eq!(top.last().expect("moov").end, protected.len());
    }
}

/// Decrypts a protected fragment in place using its own senc; returns the mdat payload.
fn decrypt(fragment: &[u8], p: &TrackProtection) -> Vec<u8> {
    let moof = find(fragment, &[b"moof"]);
    let mdat = find(fragment, &[b"mdat"]);
    let trun = find(fragment, &[b"moof", b"traf", b"trun"]);
    let traf = find(fragment, &[b"moof", b"traf"]);
    let has_senc = boxes(fragment, traf.body, traf.end)
        .expect("traf")
        .iter()
        .any(|b| &b.fourcc == b"senc");
    if !has_senc {
        // Constant IV, full samples: only cbcs audio may omit sample info.
        assert_eq!((p.scheme, p.kind), (Scheme::Cbcs, TrackKind::Audio));
        let (_, sizes) = parse_trun(fragment, &trun).expect("trun");
        let mut out = fragment[mdat.body..mdat.end].to_vec();
        let cipher = Aes128::new(&p.key.into());
        let mut at = 0;
        for size in sizes {
            cbc_decrypt_pattern(&cipher, &p.constant_iv, (0, 0), &mut out[at..at + size]);
            at += size;
        }
        return out;
    }
    let senc = find(fragment, &[b"moof", b"traf", b"senc"]);
    let saio = find(fragment, &[b"moof", b"traf", b"saio"]);
    let (offset_at, sizes) = parse_trun(fragment, &trun).expect("trun");
    assert_eq!(
        moof.start + u32_at(fragment, offset_at) as usize,
        mdat.body,
        "trun data_offset points at the first sample"
    );
    assert_eq!(
        moof.start + u32_at(fragment, saio.body + 8) as usize,
        senc.body + 8,
        "saio points at the first senc entry"
    );
    let flags = u32_at(fragment, senc.body);
    assert_eq!(u32_at(fragment, senc.body + 4) as usize, sizes.len());
    let mut at = senc.body + 8;
    let mut out = fragment[mdat.body..mdat.end].to_vec();
    let mut sample_at = 0;
    let iv_size = p.per_sample_iv_size() as usize;
    for size in sizes {
        let iv = fragment[at..at + iv_size].to_vec();
        at += iv_size;
        let mut subs = Vec::new();
        if flags & 2 != 0 {
            let n = u16::from_be_bytes([fragment[at], fragment[at + 1]]);
            at += 2;
            for _ in 0..n {
                let clear = u16::from_be_bytes([fragment[at], fragment[at + 1]]);
                subs.push((clear, u32_at(fragment, at + 2)));
                at += 6;
            }
            let covered: usize = subs
                .iter()
                .map(|(c, e)| usize::from(*c) + *e as usize)
                .sum();
            assert_eq!(covered, size, "subsamples cover the sample");
        }
        let sample = &mut out[sample_at..sample_at + size];
        match p.scheme {
            // CTR: decryption is the same keystream.
            Scheme::Cenc => {
                let info = encrypt_sample(
                    &TrackProtection {
                        kind: if subs.is_empty() {
                            TrackKind::Audio
                        } else {
                            p.kind
                        },
                        ..p.clone()
                    },
                    &iv,
                    sample,
                );
                if !subs.is_empty() {
                    assert_eq!(info.subsamples, subs);
                }
            }
            Scheme::Cbcs => {
                let cipher = Aes128::new(&p.key.into());
                let ranges = if subs.is_empty() {
                    vec![(0u16, size as u32)]
                } else {
                    subs
                };
                let mut pos = 0;
                for (clear, protected) in ranges {
                    pos += usize::from(clear);
                    cbc_decrypt_pattern(
                        &cipher,
                        &p.constant_iv,
                        p.pattern(),
                        &mut sample[pos..pos + protected as usize],
                    );
                    pos += protected as usize;
                }
            }
        }
        sample_at += size;
    }
    out
}

fn cbc_decrypt_pattern(cipher: &Aes128, iv: &[u8; 16], (crypt, skip): (u8, u8), data: &mut [u8]) {
    let mut chain = *iv;
    let period = usize::from(crypt) + usize::from(skip);
    for (i, block) in data.chunks_exact_mut(16).enumerate() {
        if period > 0 && i % period >= usize::from(crypt) {
            continue;
        }
        let ciphertext: [u8; 16] = block.try_into().expect("block");
        let mut b = aes::Block::clone_from_slice(block);
        cipher.decrypt_block(&mut b);
        for (o, (d, c)) in block.iter_mut().zip(b.iter().zip(chain.iter())) {
            *o = d ^ c;
        }
        chain = ciphertext;
    }
}

#[test]
fn protected_fragments_hide_the_media_and_decrypt_back() {
    let (_, video, audio) = clip();
    let video = &video[..50];
    let audio = &audio[..40];
    for scheme in [Scheme::Cenc, Scheme::Cbcs] {
        for (kind, samples) in [(TrackKind::Video, video), (TrackKind::Audio, audio)] {
            let p = protection(scheme, kind);
            let clear = fmp4::media_segment(7, 1, 0, samples);
            let protected = protect_fragment(&clear, &p, 99).expect("protect");
            assert_eq!(
                protect_fragment(&clear, &p, 99).expect("again"),
                protected,
                "deterministic, so every render is byte-identical"
            );
            let clear_mdat = &clear[find(&clear, &[b"mdat"]).body..];
            let mdat = find(&protected, &[b"mdat"]);
            let sealed = &protected[mdat.body..mdat.end];
            assert_eq!(sealed.len(), clear_mdat.len());
            // Every sample's first protected block is ciphertext: no slice
            // data or AAC frame is readable.
            let mut at = 0;
            let mut hidden = 0;
            for s in samples {
                let subs = match kind {
                    TrackKind::Video => nal_subsamples(&s.data, scheme),
                    TrackKind::Audio => vec![(0, s.data.len() as u32)],
                };
                let mut pos = at;
                for (c, e) in subs {
                    pos += usize::from(c);
                    if e >= 16 {
                        assert_ne!(
                            sealed[pos..pos + 16],
                            clear_mdat[pos..pos + 16],
                            "{scheme:?} {kind:?}"
                        );
                        hidden += 1;
                    }
                    pos += e as usize;
                }
                at += s.data.len();
            }
            assert!(hidden >= samples.len() / 2, "{scheme:?} {kind:?}: {hidden}");
            assert_eq!(decrypt(&protected, &p), clear_mdat, "{scheme:?} {kind:?}");
        }
    }
}

#[test]
fn nal_subsamples_keep_lengths_and_headers_clear() {
    // SPS (type 7, 10 bytes) then an IDR slice (type 5, 1 + 40 bytes).
    let mut sample = vec![0, 0, 0, 10, 0x67];
    sample.extend_from_slice(&[9; 9]);
    sample.extend_from_slice(&[0, 0, 0, 41, 0x65]);
    sample.extend_from_slice(&[7; 40]);
    // cenc: 14 clear + 4 + 1 + 8 leading clear, 32 protected.
    assert_eq!(nal_subsamples(&sample, Scheme::Cenc), vec![(27, 32)]);
    // cbcs: the whole slice body is the protected range.
    assert_eq!(nal_subsamples(&sample, Scheme::Cbcs), vec![(19, 40)]);
    // Garbage is left clear, never mis-encrypted.
    assert_eq!(nal_subsamples(&[0xff; 20], Scheme::Cenc), vec![(20, 0)]);
}

#[test]
fn foreign_bytes_are_refused_not_panicked_on() {
    let p = protection(Scheme::Cenc, TrackKind::Video);
    assert!(protect_init(b"", &p).is_err());
    assert!(protect_fragment(&[0, 0, 0, 9, b'm', b'o', b'o', b'f'], &p, 0).is_err());
    assert!(protect_fragment(&[0xff; 64], &p, 0).is_err());
}

#[test]
fn seig_group_description_layout_for_cbcs_and_cenc() {
    // cbcs video: pattern 1:9, no per-sample IV, a 16-byte constant IV.
    let mut buf = BytesMut::new();
    write_seig_sgpd(&mut buf, &protection(Scheme::Cbcs, TrackKind::Video));
    let b = one(&buf, b"sgpd");
    assert_eq!(
        &buf[b.body..b.body + 4],
        &[1, 0, 0, 0],
        "version 1, flags 0"
    );
    assert_eq!(&buf[b.body + 4..b.body + 8], b"seig");
    assert_eq!(u32_at(&buf, b.body + 8), 37, "default_length");
    assert_eq!(u32_at(&buf, b.body + 12), 1, "entry_count");
    let e = b.body + 16;
    assert_eq!(buf[e], 0, "reserved");
    assert_eq!(buf[e + 1], 0x19, "crypt 1, skip 9");
    assert_eq!(buf[e + 2], 1, "isProtected");
    assert_eq!(buf[e + 3], 0, "Per_Sample_IV_Size");
    assert_eq!(&buf[e + 4..e + 20], &KID);
    assert_eq!(buf[e + 20], 16, "constant_IV_size");
    assert_eq!(&buf[e + 21..e + 37], &IV);
    assert_eq!(b.end, e + 37);
    // cenc audio: no pattern, 8-byte per-sample IVs, no constant IV.
    let mut buf = BytesMut::new();
    write_seig_sgpd(&mut buf, &protection(Scheme::Cenc, TrackKind::Audio));
    let b = one(&buf, b"sgpd");
    assert_eq!(u32_at(&buf, b.body + 8), 20, "default_length");
    let e = b.body + 16;
    assert_eq!(&buf[e..e + 4], &[0, 0, 1, 8]);
    assert_eq!(&buf[e + 4..e + 20], &KID);
    assert_eq!(b.end, e + 20);
}

#[test]
fn seig_sample_to_group_maps_every_sample_to_the_fragment_entry() {
    let mut buf = BytesMut::new();
    write_seig_sbgp(&mut buf, 48);
    let b = one(&buf, b"sbgp");
    assert_eq!(
        &buf[b.body..b.body + 4],
        &[0, 0, 0, 0],
        "version 0, flags 0"
    );
    assert_eq!(&buf[b.body + 4..b.body + 8], b"seig");
    assert_eq!(u32_at(&buf, b.body + 8), 1, "entry_count");
    assert_eq!(u32_at(&buf, b.body + 12), 48, "sample_count");
    assert_eq!(
        u32_at(&buf, b.body + 16),
        0x0001_0001,
        "first fragment-local entry"
    );
    assert_eq!(b.end, b.body + 20);
}

#[test]
fn rotating_fragments_name_their_key_in_band_and_still_decrypt() {
    let (_, video, audio) = clip();
    for scheme in [Scheme::Cenc, Scheme::Cbcs] {
        for (kind, samples) in [
            (TrackKind::Video, &video[..30]),
            (TrackKind::Audio, &audio[..30]),
        ] {
            let p = TrackProtection {
                in_band: true,
                ..protection(scheme, kind)
            };
            let clear = fmp4::media_segment(7, 1, 0, samples);
            let protected = protect_fragment(&clear, &p, 5).expect("protect");
            let moof = find(&protected, &[b"moof"]);
            let children: Vec<[u8; 4]> = boxes(&protected, moof.body, moof.end)
                .expect("moof")
                .iter()
                .map(|b| b.fourcc)
                .collect();
            assert_eq!(children.last(), Some(b"pssh"), "{children:?}");
            let pssh = find(&protected, &[b"moof", b"pssh"]);
            assert_eq!(protected[pssh.body], 1, "version 1 lists the KID");
            assert_eq!(&protected[pssh.body + 4..pssh.body + 20], &COMMON_SYSTEM_ID);
            assert_eq!(u32_at(&protected, pssh.body + 20), 1);
            assert_eq!(&protected[pssh.body + 24..pssh.body + 40], &KID);
            let sbgp = find(&protected, &[b"moof", b"traf", b"sbgp"]);
            assert_eq!(u32_at(&protected, sbgp.body + 12) as usize, samples.len());
            let sgpd = find(&protected, &[b"moof", b"traf", b"sgpd"]);
            assert_eq!(&protected[sgpd.body + 20..sgpd.body + 36], &KID);
            // Sizes tile, the data offset moved past the new boxes, and
            // the samples decrypt as before.
            let top = boxes(&protected, 0, protected.len()).expect("top level");
            assert_eq!(top.last().expect("mdat").end, protected.len());
            let clear_mdat = &clear[find(&clear, &[b"mdat"]).body..];
            assert_eq!(decrypt(&protected, &p), clear_mdat, "{scheme:?} {kind:?}");
            let without = protect_fragment(&clear, &protection(scheme, kind), 5).expect("plain");
            assert_eq!(
                protected.len() - without.len(),
                (sbgp.end - sbgp.start) + (sgpd.end - sgpd.start) + (pssh.end - pssh.start)
            );
        }
    }
}
