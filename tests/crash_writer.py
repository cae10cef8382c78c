"""A writer that never stops on its own: the victim of the kill -9 test.

``python tests/crash_writer.py INDEX_DIR --mode add|compact --first-seed N`` opens
(or creates) the index in INDEX_DIR and loops forever:

* ``add``: add a batch of ``--batch-size`` contents, then print
  ``committed <live keepers>``;
* ``compact``: add a batch of keepers plus one *doomed* content, print
  ``committed <live keepers>``, remove the doomed content, print ``compacting``,
  compact the index and print ``compacted``.

Every content's fingerprints are random codes derived from the seed stored in
its metadata, so the test can regenerate them and check that the content is
still matchable. Every line is flushed before the loop goes on: a line the test
has read describes a commit that has happened.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from acr import ContentSpec, Index  # noqa: E402
from acr.signals.audio import HOP_S, KIND  # noqa: E402
from acr.signals.base import Fingerprints  # noqa: E402

CODES_PER_CONTENT = 400
CONTENT_FRAMES = 1875
"""30 s of frames: the fake contents look like 30 s songs."""


def fake_fingerprints(seed: int, count: int = CODES_PER_CONTENT) -> Fingerprints:
    """Random but reproducible fingerprints: the same seed gives the same codes."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << 22, count).astype(np.uint32)
    frames = np.sort(rng.integers(0, CONTENT_FRAMES, count)).astype(np.uint32)
    return Fingerprints(
        kind=KIND, codes=codes, frames=frames, hop_s=HOP_S, duration_s=CONTENT_FRAMES * HOP_S
    )


def spec(seed: int, role: str) -> ContentSpec:
    return ContentSpec(
        title=f"{role}-{seed}", content_id=f"{role}-{seed}", metadata={"seed": seed, "role": role}
    )


def live_keepers(index: Index) -> int:
    return sum(1 for record in index.list() if record.metadata.get("role") == "keeper")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("index_dir")
    parser.add_argument("--mode", choices=("add", "compact"), default="add")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=3)
    args = parser.parse_args()

    seed = args.first_seed
    with Index.open(args.index_dir, create=True) as index:
        print("opened", flush=True)
        while True:
            batch = []
            for _ in range(args.batch_size):
                batch.append((spec(seed, "keeper"), fake_fingerprints(seed)))
                seed += 1
            doomed = None
            if args.mode == "compact":
                doomed = spec(seed, "doomed")
                batch.append((doomed, fake_fingerprints(seed)))
                seed += 1
            index.add_batch(batch)
            print(f"committed {live_keepers(index)}", flush=True)
            if doomed is not None:
                assert doomed.content_id is not None
                index.remove(doomed.content_id)
                print("compacting", flush=True)
                index.compact()
                print("compacted", flush=True)


if __name__ == "__main__":
    main()
