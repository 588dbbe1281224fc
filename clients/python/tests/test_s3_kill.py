"""SIGKILL of the real server while objects are being uploaded: after a restart no partial object is
visible, the bucket's statistics count only what was acknowledged, a multipart upload keeps exactly its
acknowledged parts, and garbage collection gives back the bytes of the interrupted uploads."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cairn_client import Client

from .server import Server, on_postgres
from .test_s3 import s3_client

pytestmark = pytest.mark.skipif(
    on_postgres(),
    reason="what is checked after the restart is the embedded store's: its blob files and their garbage"
    " collection (on PostgreSQL, unreferenced bytes wait out a grace period, an hour by default; see"
    " server/tests/artifacts_postgres.rs)",
)

MIB = 1 << 20


def stalled_body(sent: threading.Event, release: threading.Event) -> Iterator[bytes]:
    """16 MiB, then a stall (the server is killed during it), then 16 MiB more that are never taken."""
    for _ in range(16):
        yield b"p" * MIB
    sent.set()
    release.wait(30)
    for _ in range(16):
        yield b"q" * MIB


def put_in_background(
    url: str, key: str, sent: threading.Event, release: threading.Event
) -> threading.Thread:
    def run() -> None:
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                length = {"Content-Length": str(32 * MIB)}
                http.put(f"/ckpt/{key}", content=stalled_body(sent, release), headers=length)
        except httpx.HTTPError:
            pass  # The server was killed under it: what the test is about.

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigkill_during_uploads_leaves_nothing_partial_and_gc_reclaims_it(
    binary: str, tmp_path: Path
) -> None:
    server = Server(binary, tmp_path / "data").start()
    release = threading.Event()
    try:
        s3 = s3_client(server)
        s3.create_bucket(Bucket="ckpt")
        s3.put_object(Bucket="ckpt", Key="kept", Body=b"k" * (3 * MIB))
        upload = s3.create_multipart_upload(Bucket="ckpt", Key="parts")["UploadId"]
        first = b"1" * (5 * MIB)
        part1 = s3.upload_part(Bucket="ckpt", Key="parts", UploadId=upload, PartNumber=1, Body=first)
        # Three PUTs and one part in flight, each past 16 MiB of its body.
        stalls = []
        for key in ("a", "b", "c"):
            sent = threading.Event()
            stalls.append((put_in_background(server.s3_url, key, sent, release), sent))
        part_sent = threading.Event()

        def part_body() -> Iterator[bytes]:
            yield from stalled_body(part_sent, release)

        def upload_part() -> None:
            try:
                with httpx.Client(base_url=server.s3_url, timeout=60) as http:
                    http.put(
                        f"/ckpt/parts?partNumber=2&uploadId={upload}",
                        content=part_body(),
                        headers={"Content-Length": str(32 * MIB)},
                    )
            except httpx.HTTPError:
                pass

        part_thread = threading.Thread(target=upload_part, daemon=True)
        part_thread.start()
        for _, sent in stalls:
            assert sent.wait(30)
        assert part_sent.wait(30)
        # Let the server take in what was sent: wait until the blob files hold most of it (seconds on a
        # loaded machine), so that the kill interrupts bodies already on disk.
        blobs = tmp_path / "data" / "blobs"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            on_disk = sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file())
            if on_disk > 3 * MIB + 5 * MIB + 4 * 12 * MIB:
                break
            time.sleep(0.05)
        server.kill()
        release.set()
        for thread, _ in stalls:
            thread.join(30)
        part_thread.join(30)

        server.start()
        s3 = s3_client(server)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ckpt").get("Contents", [])]
        assert keys == ["kept"], "no partial object is visible"
        assert s3.get_object(Bucket="ckpt", Key="kept")["Body"].read() == b"k" * (3 * MIB)
        parts = s3.list_parts(Bucket="ckpt", Key="parts", UploadId=upload)["Parts"]
        assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, 5 * MIB, part1["ETag"])]
        with Client(server.url) as client:
            # The interrupted bodies reached the blob files (16 MiB each, at least most of it) ...
            before = client.artifact_stats()["blobs"]["disk_bytes"]
            assert before > 3 * MIB + 5 * MIB + 4 * 12 * MIB, before
            bucket = client.bucket("ckpt")
            assert (bucket.objects, bucket.bytes) == (1, 3 * MIB)
            s3.abort_multipart_upload(Bucket="ckpt", Key="parts", UploadId=upload)
            gc = client.collect_garbage()
            blobs = gc["blobs"]
            # ... and garbage collection gives them back.
            assert gc["bytes_reclaimed"] >= before - blobs["disk_bytes"] > 4 * 12 * MIB, gc
            # What is left on disk is the one live object and at most the small-blob file's slack: the four
            # interrupted bodies (64 MiB and more) and the aborted part are gone.
            assert blobs["live_bytes"] == 3 * MIB, gc
            assert blobs["disk_bytes"] < 3 * MIB + 2 * MIB, gc
            assert client.artifact_stats()["blobs"]["healthy"]
        # The store goes on taking objects.
        s3.put_object(Bucket="ckpt", Key=f"after-{uuid.uuid4().hex[:6]}", Body=b"z")
    finally:
        release.set()
        server.stop()
