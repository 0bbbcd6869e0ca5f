"""Encrypts ffmpeg's clear DASH output in place with CENC ('cenc', AES-CTR),
so the self-test can play ClearKey content (ISO/IEC 23001-7).

    python cenc-encrypt.py DIR KID_HEX KEY_HEX

DIR holds one init segment and the media segments per representation, as
ffmpeg's dash muxer writes them (`init-<id>.m4s`, `chunk-<id>-<n>.m4s`,
SegmentTemplate, default-base-is-moof). ffmpeg cannot do this itself: with
fragments it writes senc/saiz/saio once in stbl, not per traf.

Init: the sample entry becomes encv/enca with sinf(frma, schm cenc, tenc
8-byte IVs, KID), plus a W3C common-format pssh listing the KID.
Media: every sample is encrypted; video per NAL unit (length prefix and NAL
header clear, rest protected; non-VCL NAL units clear), audio whole; each
traf gets senc, saiz and saio, and trun's data_offset is moved past them.
"""

import glob
import os
import re
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf"}
COMMON_SYSTEM_ID = bytes.fromhex("1077efecc0b24d02ace33c1e52e2fb4b")


def parse(data):
    """Boxes as [type, payload or children] lists; containers are parsed."""
    boxes, off = [], 0
    while off < len(data):
        size, typ = struct.unpack(">I4s", data[off : off + 8])
        hdr = 8
        if size == 1:
            size = struct.unpack(">Q", data[off + 8 : off + 16])[0]
            hdr = 16
        elif size == 0:
            size = len(data) - off
        body = data[off + hdr : off + size]
        boxes.append([typ, parse(body) if typ in CONTAINERS else body])
        off += size
    return boxes


def build(boxes):
    out = b""
    for typ, body in boxes:
        payload = build(body) if isinstance(body, list) else body
        out += struct.pack(">I4s", 8 + len(payload), typ) + payload
    return out


def box(typ, payload):
    return struct.pack(">I4s", 8 + len(payload), typ) + payload


def full(version, flags):
    return struct.pack(">I", (version << 24) | flags)


def find(boxes, typ):
    return next(b for b in boxes if b[0] == typ)


def encrypt_init(path, kid):
    boxes = parse(open(path, "rb").read())
    moov = find(boxes, b"moov")
    for trak in (b for b in moov[1] if b[0] == b"trak"):
        stbl = find(find(find(trak[1], b"mdia")[1], b"minf")[1], b"stbl")[1]
        stsd = find(stbl, b"stsd")
        head, entries = stsd[1][:8], stsd[1][8:]
        size, fourcc = struct.unpack(">I4s", entries[:8])
        entry = entries[:size]
        # Sample entry fields before its child boxes: visual 78, audio 28 bytes.
        enc, fixed = {b"avc1": (b"encv", 78), b"mp4a": (b"enca", 28)}[fourcc]
        tenc = box(b"tenc", full(0, 0) + bytes([0, 0, 1, 8]) + kid)
        sinf = box(
            b"sinf",
            box(b"frma", fourcc)
            + box(b"schm", full(0, 0) + b"cenc" + struct.pack(">I", 0x00010000))
            + box(b"schi", tenc),
        )
        body = entry[8 : 8 + fixed] + entry[8 + fixed :] + sinf
        stsd[1] = head + box(enc, body) + entries[size:]
    pssh = full(1, 0) + COMMON_SYSTEM_ID + struct.pack(">I", 1) + kid + struct.pack(">I", 0)
    moov[1].append([b"pssh", pssh])
    open(path, "wb").write(build(boxes))
    return fourcc


def ctr(key, iv, data):
    enc = Cipher(algorithms.AES(key), modes.CTR(iv + b"\0" * 8)).encryptor()
    return enc.update(data) + enc.finalize()


def encrypt_sample(key, iv, sample, video):
    """Returns (encrypted sample, subsamples [(clear, protected)] or None)."""
    if not video:
        return ctr(key, iv, sample), None
    subs, clear_run, plain_protected, off = [], 0, [], 0
    while off < len(sample):
        n = struct.unpack(">I", sample[off : off + 4])[0]
        nal_type = sample[off + 4] & 0x1F
        if nal_type in (1, 5) and n > 1:  # coded slices: protect after the header
            subs.append((clear_run + 5, n - 1))
            plain_protected.append(sample[off + 5 : off + 4 + n])
            clear_run = 0
        else:
            clear_run += 4 + n
        off += 4 + n
    if clear_run:
        subs.append((clear_run, 0))
    # CTR runs on over all protected ranges of a sample, as one stream.
    cipher = ctr(key, iv, b"".join(plain_protected))
    out, off, c = bytearray(sample), 0, 0
    for clear, protected in subs:
        off += clear
        out[off : off + protected] = cipher[c : c + protected]
        off += protected
        c += protected
    return bytes(out), subs


def encrypt_segment(path, key, video, iv_seed):
    data = open(path, "rb").read()
    boxes = parse(data)
    moof = find(boxes, b"moof")
    mdat_index = next(i for i, b in enumerate(boxes) if b[0] == b"mdat")
    moof_size = len(build([moof]))
    traf = find(moof[1], b"traf")
    tfhd = find(traf[1], b"tfhd")[1]
    trun_box = find(traf[1], b"trun")
    trun = trun_box[1]
    tf_flags = struct.unpack(">I", tfhd[:4])[0] & 0xFFFFFF
    default_size = None
    if tf_flags & 0x10:
        off = 8 + (8 if tf_flags & 0x1 else 0) + (4 if tf_flags & 0x2 else 0) + (4 if tf_flags & 0x8 else 0)
        default_size = struct.unpack(">I", tfhd[off : off + 4])[0]
    flags = struct.unpack(">I", trun[:4])[0] & 0xFFFFFF
    count = struct.unpack(">I", trun[4:8])[0]
    pos = 8
    data_offset = None
    if flags & 0x1:
        data_offset_pos = pos
        data_offset = struct.unpack(">i", trun[pos : pos + 4])[0]
        pos += 4
    if flags & 0x4:
        pos += 4
    sizes = []
    for _ in range(count):
        if flags & 0x100:
            pos += 4
        if flags & 0x200:
            sizes.append(struct.unpack(">I", trun[pos : pos + 4])[0])
            pos += 4
        else:
            sizes.append(default_size)
        if flags & 0x400:
            pos += 4
        if flags & 0x800:
            pos += 4
    mdat_start = sum(len(build([b])) for b in boxes[:mdat_index])
    moof_start = sum(len(build([b])) for b in boxes[: boxes.index(moof)])
    # Sample data starts at moof + data_offset (default-base-is-moof).
    first = (moof_start + data_offset) if data_offset is not None else mdat_start + 8
    mdat_body = bytearray(boxes[mdat_index][1])
    rel = first - (mdat_start + 8)
    senc_body, info_sizes = b"", []
    for i, size in enumerate(sizes):
        iv = struct.pack(">Q", iv_seed + i)
        enc, subs = encrypt_sample(key, iv, bytes(mdat_body[rel : rel + size]), video)
        mdat_body[rel : rel + size] = enc
        rel += size
        entry = iv
        if subs is not None:
            entry += struct.pack(">H", len(subs)) + b"".join(struct.pack(">HI", c, p) for c, p in subs)
        senc_body += entry
        info_sizes.append(len(entry))
    boxes[mdat_index][1] = bytes(mdat_body)
    senc = full(0, 0x2 if video else 0) + struct.pack(">I", count) + senc_body
    if len(set(info_sizes)) == 1:
        saiz = full(0, 0) + bytes([info_sizes[0]]) + struct.pack(">I", count)
    else:
        saiz = full(0, 0) + bytes([0]) + struct.pack(">I", count) + bytes(info_sizes)
    traf[1] += [[b"saiz", saiz], [b"saio", full(0, 0) + struct.pack(">II", 1, 0)], [b"senc", senc]]
    # saio points at the first IV in senc, counted from the start of moof.
    # senc is the last box of the last (only) traf, so the last box of moof.
    senc_at = len(build([moof])) - (8 + len(senc))
    traf[1][-2][1] = full(0, 0) + struct.pack(">II", 1, senc_at + 16)
    delta = len(build([moof])) - moof_size
    if data_offset is not None:
        trun_box[1] = trun[:data_offset_pos] + struct.pack(">i", data_offset + delta) + trun[data_offset_pos + 4 :]
    open(path, "wb").write(build(boxes))
    return count


def main():
    directory, kid_hex, key_hex = sys.argv[1:4]
    kid, key = bytes.fromhex(kid_hex), bytes.fromhex(key_hex)
    for init in sorted(glob.glob(os.path.join(directory, "init-*.m4s"))):
        rep = re.match(r"init-(.+)\.m4s$", os.path.basename(init)).group(1)
        video = encrypt_init(init, kid) == b"avc1"
        seed = 1 << 32 if video else 2 << 32  # distinct IVs per track
        chunks = sorted(glob.glob(os.path.join(directory, f"chunk-{rep}-*.m4s")))
        for chunk in chunks:
            seed += encrypt_segment(chunk, key, video, seed)
        print(f"cenc-encrypt: {init}: {'video' if video else 'audio'}, {len(chunks)} segments", file=sys.stderr)


if __name__ == "__main__":
    main()
