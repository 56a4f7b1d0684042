"""The moov reader against real MP4s remuxed by PyAV: faststart, moov at the end, fragmented."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import pytest

from webhook_poller.adapters.demo import sample_video_path
from webhook_poller.media import _probe_with_pyav, probe_file, probe_fileobj
from webhook_poller.mp4 import read_moov

LAYOUTS = {
    "moov_at_end": {},
    "faststart": {"movflags": "faststart"},
    "fragmented": {"movflags": "frag_keyframe+empty_moov"},
}


def remux(dst: Path, options: dict[str, str]) -> Path:
    """Copy the sample's video stream into a new MP4 written with ``options``."""
    with (
        av.open(str(sample_video_path())) as src,
        av.open(str(dst), "w", format="mp4", options=options) as out,
    ):
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def top_level(data: bytes) -> list[str]:
    kinds, pos = [], 0
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        kinds.append(kind.decode())
        pos += length
    return kinds


@pytest.fixture(params=list(LAYOUTS))
def mp4(request, tmp_path: Path) -> tuple[str, Path]:
    return request.param, remux(tmp_path / f"{request.param}.mp4", LAYOUTS[request.param])


class CountingReader(io.BytesIO):
    """A file that counts the bytes read from it."""

    read_bytes = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.read_bytes += len(data)
        return data


def test_probe_gives_what_pyav_gives_for_every_layout(mp4):
    """duration, width, height and codec equal PyAV's answer, whatever the box order."""
    _, path = mp4
    size = path.stat().st_size
    assert probe_file(path) == _probe_with_pyav(str(path), size)
    assert probe_file(path).codec == "h264" and probe_file(path).width == 320


@pytest.mark.parametrize("layout", ["moov_at_end", "faststart"])
def test_moov_reader_answers_alone_for_faststart_and_moov_at_end(layout, tmp_path):
    """Both ordinary layouts are read from the moov box, which sits where the name says."""
    data = remux(tmp_path / "v.mp4", LAYOUTS[layout]).read_bytes()
    kinds = top_level(data)
    assert (kinds.index("moov") < kinds.index("mdat")) == (layout == "faststart")
    facts = read_moov(io.BytesIO(data), len(data))
    assert facts is not None and facts.complete
    assert (facts.duration_s, facts.width, facts.height, facts.codec) == (2.0, 320, 180, "h264")


def test_fragmented_mp4_falls_back_to_pyav_for_the_duration(tmp_path):
    """An empty-moov fragmented file has no duration in mvhd; PyAV supplies it."""
    path = remux(tmp_path / "frag.mp4", LAYOUTS["fragmented"])
    data = path.read_bytes()
    facts = read_moov(io.BytesIO(data), len(data))
    assert facts is not None and facts.duration_s is None and facts.width == 320
    assert probe_file(path).duration_s == 2.0


def test_moov_reader_reads_only_box_headers_and_the_moov(tmp_path):
    """Behind 4 MiB of other boxes, the reader reads headers and the moov, not the media."""
    data = remux(tmp_path / "end.mp4", LAYOUTS["moov_at_end"]).read_bytes()
    pad, ftyp = 4 * 1024 * 1024, struct.unpack_from(">I", data)[0]
    padded = data[:ftyp] + struct.pack(">I4s", pad, b"free") + bytes(pad - 8) + data[ftyp:]
    assert top_level(padded)[:2] == ["ftyp", "free"]
    reader = CountingReader(padded)
    meta = probe_fileobj(reader, len(padded))
    assert (meta.duration_s, meta.width, meta.height, meta.codec) == (2.0, 320, 180, "h264")
    assert reader.read_bytes < 4096


def test_not_an_mp4_gives_no_moov_facts():
    """A WebM-like or junk file has no moov: the reader says None and PyAV is asked."""
    junk = b"\x1a\x45\xdf\xa3" + bytes(100)
    assert read_moov(io.BytesIO(junk), len(junk)) is None
    assert probe_fileobj(io.BytesIO(junk), len(junk)).width is None
