"""Issue 4: a large video streamed from a provider URL into S3, memory and time.

A local server streams ``--mb`` MiB (``bench.byte_source``); an S3 emulator (moto's server
mode, over HTTP) receives it. Each way of moving the bytes runs in a fresh child process
that reports its time and its peak RSS growth (VmHWM, reset through /proc/self/clear_refs
once the libraries are loaded):

* ``ours``: ``S3BlobStorage.put_stream`` fed by httpx's streamed download (what the service
  does): one part buffer of ``part_size_mb`` (8 MiB), MD5 per part, size check at the end;
* ``temp file + upload_file``: download to a temporary file, then aioboto3's managed
  ``upload_file`` (multipart, 8 MiB parts, 10 threads);
* ``in memory + put_object``: the naive way, the whole body in memory, one PUT.

The ways alternate over ``--rounds``; the table gives medians. moto keeps the objects in its
own memory, and its speed bounds the MB/s here, not a real S3.

    python -m bench.s3_upload --mb 1024 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import harness

BUCKET = "bench"
WAYS = ("ours", "temp file + upload_file", "in memory + put_object")


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _reset_peak() -> float:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS (Linux >= 4.0)
    return _hwm_mb()


async def child(way: str, endpoint: str, source: str, mb: int) -> dict:
    import aioboto3
    import httpx
    from botocore.config import Config

    from tests.support.s3_server import ACCESS_KEY, SECRET_KEY
    from webhook_poller.blobs.s3 import S3BlobStorage

    url = f"{source}/video.mp4?mb={mb}"
    key = f"{way.split()[0]}-{time.time_ns()}.mp4"
    storage = S3BlobStorage(
        {
            "url": f"s3://{BUCKET}",
            "endpoint_url": endpoint,
            "addressing_style": "path",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
        }
    )
    await storage.open()
    session = aioboto3.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
    )
    cfg = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required")
    async with (
        httpx.AsyncClient(timeout=120) as http,
        session.client("s3", endpoint_url=endpoint, config=cfg) as s3,
    ):
        await s3.list_buckets()  # every library loaded and connected before the clock
        base = _reset_peak()
        started = time.perf_counter()
        if way == "ours":
            async with http.stream("GET", url) as resp:
                stored = await storage.put_stream(
                    key,
                    resp.aiter_bytes(),
                    content_type="video/mp4",
                    max_bytes=4 * 1024**3,
                    filename="video.mp4",
                )
            size = stored.size_bytes
        elif way == "temp file + upload_file":
            with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
                async with http.stream("GET", url) as resp:
                    async for chunk in resp.aiter_bytes():
                        tmp.write(chunk)
                tmp.flush()
                await s3.upload_file(tmp.name, BUCKET, key)
            size = (await s3.head_object(Bucket=BUCKET, Key=key))["ContentLength"]
        else:
            body = (await http.get(url)).content
            await s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            size = len(body)
            del body
        seconds = time.perf_counter() - started
        peak = _hwm_mb() - base
    await storage.close()
    assert size == mb * 1024 * 1024, size
    return {"seconds": seconds, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=WAYS)
    parser.add_argument("--endpoint")
    parser.add_argument("--source")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.endpoint, args.source, args.mb))))
        return

    from tests.support.s3_server import MotoServer

    moto = MotoServer().start()
    try:
        moto.make_bucket(BUCKET)
        results: dict[str, list[dict]] = {way: [] for way in WAYS}
        with harness.python_server("bench.byte_source") as (source, _):
            for _ in range(args.rounds):
                for way in WAYS:
                    out = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "bench.s3_upload",
                            "--child",
                            way,
                            "--endpoint",
                            moto.url,
                            "--source",
                            source,
                            "--mb",
                            str(args.mb),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                        cwd=harness.ROOT,
                    )
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    print(way, result, flush=True)
                    results[way].append(result)
    finally:
        moto.stop()
    rows = []
    for way, runs in results.items():
        seconds = harness.median([r["seconds"] for r in runs])
        rows.append(
            {
                "way": way,
                "MiB": args.mb,
                "seconds (median)": seconds,
                "MiB/s": args.mb / seconds,
                "peak RSS growth MiB": harness.median([r["peak_mb"] for r in runs]),
            }
        )
    harness.report(
        f"{args.mb} MiB from a local URL into S3 (moto server), {args.rounds} rounds", rows
    )


if __name__ == "__main__":
    main()
