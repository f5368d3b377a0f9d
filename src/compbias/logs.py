"""Job logging for workflow scripts."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def log_to(path: str | Path | None) -> Iterator[logging.Logger]:
    """Send this job's stdout, stderr and ``logging`` to ``path``; on failure the error is
    also printed to the original stderr, where Snakemake shows it."""
    log = logging.getLogger("compbias")
    if path is None:
        logging.basicConfig(level=logging.INFO)
        yield log
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    err = sys.stderr
    with open(path, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        start = time.perf_counter()
        try:
            yield log
            log.info("done in %.1f s", time.perf_counter() - start)
        except BaseException as exc:
            log.exception("failed")
            print(f"compbias: {type(exc).__name__}: {exc}", file=err)
            raise
        finally:
            log.removeHandler(handler)
