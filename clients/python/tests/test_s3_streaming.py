"""Large objects through the S3 API of the real server: a 200 MiB multipart upload and download compared by
SHA-256, and a 1 GiB object streamed up in one PUT and back down in one GET while the server's anonymous
memory (its heap, what object bodies would grow) stays flat."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from boto3.s3.transfer import TransferConfig

from .server import Server, new_backend
from .test_s3 import s3_client

MIB = 1 << 20


def test_a_200_mib_multipart_upload_and_download_match_by_sha256(server: Server, tmp_path: Path) -> None:
    s3 = s3_client(server)
    bucket = f"big-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "dataset.bin"
    with open(src, "wb") as f:
        for _ in range(25):
            f.write(os.urandom(8 * MIB))
    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4)
    s3.upload_file(str(src), bucket, "datasets/train.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="datasets/train.bin")
    assert head["ContentLength"] == 200 * MIB
    assert head["ETag"].endswith('-25"'), "25 parts of 8 MiB"
    dst = tmp_path / "back.bin"
    s3.download_file(bucket, "datasets/train.bin", str(dst), Config=config)
    assert sha256_of(dst) == sha256_of(src)
    # Range reads at both ends of the object.
    with open(src, "rb") as f:
        first = f.read(1000)
        f.seek(200 * MIB - 1000)
        last = f.read()
    assert s3.get_object(Bucket=bucket, Key="datasets/train.bin", Range="bytes=0-999")["Body"].read() == first
    tail = s3.get_object(Bucket=bucket, Key="datasets/train.bin", Range="bytes=-1000")
    assert tail["ContentRange"] == f"bytes {200 * MIB - 1000}-{200 * MIB - 1}/{200 * MIB}"
    assert tail["Body"].read() == last


def sha256_of(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.digest()


def pattern(total: int, seed: int) -> Iterator[bytes]:
    """``total`` bytes in 1 MiB pieces that differ from one another, made as they are sent."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    for i in range(total // MIB):
        yield i.to_bytes(8, "little") + block[8:]


def rss_anon_kib(pid: int) -> int:
    """The process's anonymous resident memory (heap and stacks; not the page cache of its mapped files)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/PID/status")


class PeakSampler:
    """Samples a process's anonymous memory every 20 ms until stopped; the highest value seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_anon_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon_kib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def test_a_1_gib_object_streams_both_ways_in_flat_memory(binary: str, tmp_path: Path) -> None:
    # A server of its own, so that nothing else runs in it while its memory is sampled.
    server = Server(binary, tmp_path / "data", backend=new_backend()).start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        s3_client(server).create_bucket(Bucket="ckpt")
        # Warm up: one small object each way, so that the baseline includes the server's own buffers.
        with httpx.Client(base_url=server.s3_url, timeout=300) as http:
            assert http.put("/ckpt/warm", content=b"w" * MIB).status_code == 200
            assert http.get("/ckpt/warm").content == b"w" * MIB
            baseline = rss_anon_kib(pid)
            size = 1024 * MIB
            sent = hashlib.sha256()

            def body() -> Iterator[bytes]:
                for piece in pattern(size, 7):
                    sent.update(piece)
                    yield piece

            with PeakSampler(pid) as up:
                put = http.put("/ckpt/model.bin", content=body(), headers={"Content-Length": str(size)})
            assert put.status_code == 200, put.text
            got = hashlib.sha256()
            with PeakSampler(pid) as down, http.stream("GET", "/ckpt/model.bin") as resp:
                assert resp.status_code == 200
                assert resp.headers["Content-Length"] == str(size)
                for chunk in resp.iter_bytes(MIB):
                    got.update(chunk)
        assert got.digest() == sent.digest()
        # A server that buffered the body would grow by the object's size; one that streams stays within
        # its bounded channels and hashing buffers (a few MiB per request).
        grown_up, grown_down = (up.peak - baseline) // 1024, (down.peak - baseline) // 1024
        print(f"RssAnon {baseline // 1024} MiB, +{grown_up} MiB uploading, +{grown_down} MiB downloading")
        assert grown_up < 64, f"anonymous memory grew by {grown_up} MiB while 1 GiB was uploaded"
        assert grown_down < 64, f"anonymous memory grew by {grown_down} MiB while 1 GiB was downloaded"
    finally:
        server.stop()
