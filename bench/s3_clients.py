"""Bare PUT/GET throughput of boto3 vs obstore (obstore comes from the [test] extra) against a local SeaweedFS (``weed mini``), 4 MiB objects, 8 workers.

Usage: python bench/s3_clients.py ENDPOINT ACCESS SECRET BUCKET [N]. Prints MiB/s per client and operation.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore.config
from obstore.store import S3Store
import obstore

MiB = 1 << 20


def main() -> None:
    endpoint, access, secret, bucket = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 48
    data = os.urandom(4 * MiB)
    c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access,
                     aws_secret_access_key=secret, config=botocore.config.Config(
                         signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=16))
    with ThreadPoolExecutor(8) as ex:
        t = time.monotonic()
        list(ex.map(lambda i: c.put_object(Bucket=bucket, Key=f"b/{i}", Body=data), range(n)))
        put = n * 4 / (time.monotonic() - t)
        t = time.monotonic()
        list(ex.map(lambda i: c.get_object(Bucket=bucket, Key=f"b/{i}")["Body"].read(), range(n)))
        get = n * 4 / (time.monotonic() - t)
    print(f"boto3 x8 threads: PUT {put:.0f} MiB/s, GET {get:.0f} MiB/s")

    store = S3Store(bucket, endpoint=endpoint, access_key_id=access, secret_access_key=secret,
                    region="us-east-1", client_options={"allow_http": True}, virtual_hosted_style_request=False)

    async def run() -> tuple[float, float]:
        sem = asyncio.Semaphore(8)

        async def put1(i: int) -> None:
            async with sem:
                await obstore.put_async(store, f"o/{i}", data)

        async def get1(i: int) -> None:
            async with sem:
                await (await obstore.get_async(store, f"o/{i}")).bytes_async()
        t = time.monotonic()
        await asyncio.gather(*(put1(i) for i in range(n)))
        p = n * 4 / (time.monotonic() - t)
        t = time.monotonic()
        await asyncio.gather(*(get1(i) for i in range(n)))
        return p, n * 4 / (time.monotonic() - t)
    put, get = asyncio.run(run())
    print(f"obstore async x8: PUT {put:.0f} MiB/s, GET {get:.0f} MiB/s")


if __name__ == "__main__":
    main()
