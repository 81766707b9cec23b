"""How fast one socket may send frames: a token bucket, refilled with time.

A tab sends a frame when its member acts (a question, a stop, an edit), so a
few a second is plenty; a script flooding one socket would otherwise make the
server validate, read the session and reply to every frame. Over the limit a
frame is refused with `rate_limited` and nothing is done; only the first
refusal of a run is answered, so a flood gets no flood of errors back.
"""

from __future__ import annotations

import math


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate  # tokens per second
        self.burst = burst
        self.tokens = float(burst)
        self.at = now
        self.refused_in_a_row = 0

    def take(self, now: float) -> bool:
        """Spend a token for a frame arriving `now`; False when there is none."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False

    def retry_after(self) -> int:
        """Whole seconds until the next frame would be taken (at least 1)."""
        return max(1, math.ceil((1 - self.tokens) / self.rate))
