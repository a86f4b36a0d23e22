"""`python -m masksae.corpora [CACHE_ROOT]`: build the default offline English corpus and print its stats."""

import json
import logging
import sys
from pathlib import Path

from masksae.corpora import corpus_stats


def main() -> None:
    """Build (or reuse) the corpus under CACHE_ROOT (default .cache) and print its per-split counts."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache")
    stats = corpus_stats(root, {"source": "offline_english", "name": "offline_english"})
    print(json.dumps({k: stats[k] for k in ("splits", "stats", "build_seconds", "workers")}, indent=1))


if __name__ == "__main__":
    main()
