"""A repeated call that fails, logged once: the first failure, then the recovery.

A Redis or Postgres outage would otherwise log a traceback per delta or per
flush: dozens of lines a second that bury the one that says what happened.
"""

from __future__ import annotations

import logging


class Trouble:
    """Logs the first failure of a repeated call, then nothing until it works again."""

    def __init__(self, what: str, log: logging.Logger):
        self.what = what
        self.log = log
        self.failures = 0

    def failed(self, error: BaseException, consequence: str) -> None:
        self.failures += 1
        if self.failures == 1:
            self.log.warning("%s failed (%s): %s", self.what, type(error).__name__, consequence, exc_info=error)

    def worked(self) -> None:
        if self.failures:
            self.log.warning("%s works again after %d failed attempts", self.what, self.failures)
            self.failures = 0
