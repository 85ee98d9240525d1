"""Decoding and preprocessing images for `jimm predict / embed / index`: grain's threads (`ImageStream`) against a
plain thread pool and a single thread, on the same JPEG files, with no model (the part the model waits for).

    python benchmarks/decode_pipeline.py            # 96 JPEGs of 512x512 -> 224x224 (ViT processor), 4 threads
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from jimm.data.preprocess import ImageProcessorConfig, preprocess
from jimm.data.stream import ImageStream


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    from skimage import data

    processor = ImageProcessorConfig(size=(224, 224))
    with tempfile.TemporaryDirectory() as tmp:
        photo = Image.fromarray(data.astronaut())
        paths = []
        for i in range(args.images):
            paths.append(Path(tmp) / f"{i:04d}.jpg")
            photo.rotate(i % 360).save(paths[-1], quality=90)

        def serial():
            return [preprocess(p, processor) for p in paths]

        def pool():
            with ThreadPoolExecutor(args.threads) as ex:
                return list(ex.map(lambda p: preprocess(p, processor), paths))

        def grain():
            return [
                b.pixels for b in ImageStream(paths, processor, batch_size=args.batch_size, num_threads=args.threads)
            ]

        for name, fn in (
            ("one thread", serial),
            (f"thread pool ({args.threads})", pool),
            (f"grain ImageStream ({args.threads})", grain),
        ):
            fn()  # warm the page cache and imports
            times = []
            for _ in range(3):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            print(f"{name:28s} {args.images / float(np.median(times)):8.1f} images/s")


if __name__ == "__main__":
    main()
