"""Read an MP4's facts from its ``moov`` box alone: duration, width, height and codec.

A pure reader over a seekable binary file (no FFmpeg): it walks the top-level boxes by their
headers, seeking past ``mdat`` (the media data, almost all of the file), reads the one
``moov`` box wherever it sits (first in a "faststart" file, last in most others) and parses
``mvhd`` and the first video track's ``hdlr`` and ``stsd``. On S3 that is two or three ranged
reads instead of the container opened by FFmpeg. What it cannot read (fragmented files with
no duration in ``mvhd``, a codec it does not name, anything but ISO-BMFF) it returns as None,
and :mod:`webhook_poller.media` asks PyAV instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO

#: A moov larger than this (hours of video have a few MiB) is left to PyAV.
MAX_MOOV_BYTES = 64 * 1024 * 1024
_TOP_LEVEL_SCAN = 64  # boxes before moov: ftyp, free, mdat, uuid ... never this many

#: Sample-entry codes to the names FFmpeg (so PyAV's ``codec_context.name``) gives them.
CODECS = {
    b"avc1": "h264",
    b"avc3": "h264",
    b"hvc1": "hevc",
    b"hev1": "hevc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"vp08": "vp8",
    b"mp4v": "mpeg4",
    b"apcn": "prores",
    b"apch": "prores",
    b"apcs": "prores",
    b"apco": "prores",
    b"ap4h": "prores",
}


@dataclass(frozen=True, slots=True)
class MoovFacts:
    """What the moov box says; a field is None when the box did not say it."""

    duration_s: float | None
    width: int | None
    height: int | None
    codec: str | None

    @property
    def complete(self) -> bool:
        return None not in (self.duration_s, self.width, self.height, self.codec)


def read_moov(fh: IO[bytes], size: int) -> MoovFacts | None:
    """The facts of the MP4 in ``fh`` (``size`` bytes), or None when it has no moov we read."""
    moov = _find_moov(fh, size)
    return None if moov is None else parse_moov(moov)


def _find_moov(fh: IO[bytes], size: int) -> bytes | None:
    pos = 0
    for _ in range(_TOP_LEVEL_SCAN):
        if pos + 8 > size:
            return None
        fh.seek(pos)
        head = fh.read(16)
        if len(head) < 8:
            return None
        length, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if length == 1:  # a 64-bit size follows
            if len(head) < 16:
                return None
            (length,) = struct.unpack(">Q", head[8:16])
            header = 16
        elif length == 0:  # the box runs to the end of the file
            length = size - pos
        if length < header or pos + length > size:
            return None
        if kind == b"moov":
            if length > MAX_MOOV_BYTES:
                return None
            fh.seek(pos + header)
            body = fh.read(length - header)
            return body if len(body) == length - header else None
        pos += length
    return None


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, list[bytes]]:
    """The child boxes of one container's payload, by type (each type may repeat: trak)."""
    end = len(data) if end is None else end
    found: dict[bytes, list[bytes]] = {}
    pos = start
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:
            if pos + 16 > end:
                break
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif length == 0:
            length = end - pos
        if length < header or pos + length > end:
            break
        found.setdefault(kind, []).append(data[pos + header : pos + length])
        pos += length
    return found


def _first(boxes: dict[bytes, list[bytes]], kind: bytes) -> bytes | None:
    found = boxes.get(kind)
    return found[0] if found else None


def parse_moov(moov: bytes) -> MoovFacts:
    """Facts from a moov payload; never raises on a short or odd box, it says None."""
    try:
        children = _boxes(moov)
        duration = _movie_duration(_first(children, b"mvhd"))
        for trak in children.get(b"trak", []):
            video = _video_sample_entry(trak)
            if video is not None:
                codec_code, width, height = video
                return MoovFacts(duration, width or None, height or None, CODECS.get(codec_code))
        return MoovFacts(duration, None, None, None)
    except struct.error:
        return MoovFacts(None, None, None, None)


def _movie_duration(mvhd: bytes | None) -> float | None:
    if mvhd is None or len(mvhd) < 20:
        return None
    timescale: int
    duration: int
    if mvhd[0] == 1:  # version 1: 64-bit times and duration
        timescale, duration = struct.unpack_from(">IQ", mvhd, 20)
    else:
        timescale, duration = struct.unpack_from(">II", mvhd, 12)
    if not timescale or not duration or duration == 0xFFFFFFFF:
        return None  # unknown (a fragmented file says so with all ones)
    return round(float(duration) / timescale, 3)


def _video_sample_entry(trak: bytes) -> tuple[bytes, int, int] | None:
    mdia = _first(_boxes(trak), b"mdia")
    if mdia is None:
        return None
    mdia_children = _boxes(mdia)
    hdlr = _first(mdia_children, b"hdlr")
    if hdlr is None or len(hdlr) < 12 or hdlr[8:12] != b"vide":
        return None
    minf = _first(mdia_children, b"minf")
    stbl = _first(_boxes(minf), b"stbl") if minf is not None else None
    stsd = _first(_boxes(stbl), b"stsd") if stbl is not None else None
    # stsd: version/flags, entry count, then the first sample entry (size, code, 6 reserved,
    # data reference index, 16 bytes of visual-entry fields, width, height)
    if stsd is None or len(stsd) < 8 + 36:
        return None
    code = stsd[12:16]
    width, height = struct.unpack_from(">HH", stsd, 8 + 32)
    return code, width, height
