"""Upload one file with tuspy, printing JSON events (for the tests that kill it).

    python tests/tuspy_upload.py ENDPOINT PATH CHUNK_SIZE [URL]
"""

from __future__ import annotations

import json
import sys

from tusclient import client


def main() -> None:
    endpoint, path, chunk_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    url = sys.argv[4] if len(sys.argv) > 4 else None
    stream = open(path, "rb")
    uploader = client.TusClient(endpoint).uploader(file_stream=stream, url=url,
                                                   chunk_size=chunk_size)
    if uploader.url is None:
        uploader.set_url(uploader.create_url())
    print(json.dumps({"event": "url", "url": uploader.url}), flush=True)
    while uploader.offset < uploader.get_file_size():
        uploader.upload_chunk()
        print(json.dumps({"event": "offset", "offset": uploader.offset}), flush=True)
    print(json.dumps({"event": "success", "url": uploader.url}), flush=True)


if __name__ == "__main__":
    main()
