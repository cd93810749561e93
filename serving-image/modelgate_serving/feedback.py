"""Prediction ids, and feedback that counts only for predictions this model's servers made.

Every answered prediction gets an id: the model version, the issue time, the row count and a
random nonce, authenticated with keyed BLAKE2s (a MAC by design, RFC 7693; a third of
HMAC-SHA256's cost, which matters on every prediction) under the servers' feedback key. The id is
self-verifying, so any process holding the same key (every worker of a pod; every pod, when
the key comes from one Secret) can check it without shared state, and nobody without the key
can make one: feedback cannot be forged, and cannot name a version that never served.

Each (id, row) counts once per process, within a window after the prediction. Ids older than
the window are refused outright, so the ledger of spent ids only has to remember ids younger
than the window: they leave it when they expire (a heap ordered by expiry). Its size is also
capped (`feedback_capacity`); when full, feedback is refused with 429 rather than forgetting
spent ids early, which would let them be replayed. Memory: about 150 bytes per remembered
outcome (an int in a set and an (expiry, int) pair in the heap), so 15 MB at the default cap.

What this does not stop: an id replayed to a different process is counted once there too
(the ledgers are per process), so a client holding genuine ids could count each at most once
per serving process. Requiring a token from feedback senders (`feedback_token`) closes that
to anyone without the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import random
import re
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass

_HEAD = struct.Struct(">QIQ")  # issued (ms since the epoch), rows, nonce
_MAC_BYTES = 16
_VERSION = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$")
FUTURE_SKEW = 60.0
"""Seconds an id may appear to come from the future (clocks of pods differ a little)."""


class FeedbackError(Exception):
    """Feedback that is not counted: an HTTP status and a message for the sender."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_key() -> str:
    """A random feedback key, for servers given none."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class PredictionId:
    """What a verified id says."""

    version: str
    issued: float
    """Seconds since the epoch."""
    rows: int
    nonce: int


class Issuer:
    """Makes and verifies the prediction ids of one model, under one key."""

    def __init__(self, model: str, version: str, key: str) -> None:
        # Keyed once, copied per id: copying is cheaper than keying a new hash each time.
        self._keyed = hashlib.blake2s(key=hashlib.sha256(key.encode()).digest(),
                                      digest_size=_MAC_BYTES)
        self._keyed.update(model.encode() + b"\0")
        self._version = version.encode()
        # Nonces need to be unique, not secret (the MAC is what cannot be forged): a generator
        # seeded from the OS is 100 times cheaper per call than the OS itself.
        self._nonces = random.Random(secrets.randbits(128))

    def _mac(self, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.digest()

    def issue(self, rows: int, now: float) -> str:
        """A new id for a prediction of `rows` rows made now (seconds since the epoch)."""
        payload = _HEAD.pack(int(now * 1000), rows, self._nonces.getrandbits(64)) \
            + self._version
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def verify(self, text: object, where: str) -> PredictionId:
        """The id's contents; FeedbackError (400) unless this model's servers issued it."""
        refused = FeedbackError(400, f"{where}: not a prediction id issued by this model's "
                                     "servers; send the X-Prediction-Id of the prediction's "
                                     "answer")
        if not isinstance(text, str) or len(text) > 200:
            raise refused
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise refused from None
        if len(raw) <= _HEAD.size + _MAC_BYTES:
            raise refused
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise refused
        issued_ms, rows, nonce = _HEAD.unpack_from(payload)
        version = payload[_HEAD.size:]
        if not _VERSION.match(version):
            raise refused
        return PredictionId(version.decode(), issued_ms / 1000, rows, nonce)


@dataclass(frozen=True)
class Outcome:
    """One piece of feedback: a row of a prediction, and whether it was right."""

    id: PredictionId
    row: int
    correct: bool


class Ledger:
    """The (id, row) pairs already counted, remembered until their ids expire."""

    def __init__(self, window: float, capacity: int) -> None:
        self.window = window
        self.capacity = capacity
        self._spent: set[int] = set()
        self._expiry: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._spent)

    def spend(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Remember all of `outcomes` as counted, or none (FeedbackError) if any may not be."""
        self._forget_expired(now)
        keys = []
        for index, outcome in enumerate(outcomes):
            where = f"feedback[{index}]"
            age = now - outcome.id.issued
            if age > self.window:
                raise FeedbackError(410, f"{where}.id: the prediction is {age:.0f} s old; "
                                         f"feedback is taken for {self.window:.0f} s "
                                         "(--feedback-window)")
            if age < -FUTURE_SKEW:
                raise FeedbackError(400, f"{where}.id: issued {-age:.0f} s in the future")
            key = (outcome.id.nonce << 32) | outcome.row
            if key in self._spent or key in keys:
                raise FeedbackError(409, f"{where}: feedback for row {outcome.row} of this "
                                         "prediction was counted already")
            keys.append(key)
        if len(self._spent) + len(keys) > self.capacity:
            raise FeedbackError(429, f"this server remembers {self.capacity} counted outcomes "
                                     "(--feedback-capacity) and is full; retry when older "
                                     "predictions have left the window")
        for key, outcome in zip(keys, outcomes, strict=True):
            self._spent.add(key)
            heapq.heappush(self._expiry, (outcome.id.issued + self.window, key))

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, key = heapq.heappop(self._expiry)
            self._spent.discard(key)
