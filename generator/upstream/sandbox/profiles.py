"""Fault profiles: how each model behaves (latency, errors, overload episodes, quotas).

Pure: no Django, no HTTP. Profiles are data (built-ins below, more in a TOML file, see
docs/sandbox.md); the state machines run on the sandbox's virtual clock, in unscaled
seconds, so the time scale compresses every duration at once.

The numbers follow docs/upstream.md: Pro fails ~45 % at peak and Flash under
10 %, overloads come in episodes that start and last (not independent coin flips), an
outage is a long stretch of 503 UNAVAILABLE, quotas are token buckets.
"""

import math
import random
import time
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

FAULTS = ("overloaded", "unavailable", "server_error")


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Episodes:
    """Alternating calm stretches and episodes of `kind` failures."""

    kind: str = "overloaded"  # overloaded | unavailable
    every_s: tuple[float, float] = (600.0, 1800.0)  # calm stretch between episodes
    last_s: tuple[float, float] = (300.0, 900.0)  # length of an episode
    first_at_s: float | None = None  # when the first episode starts (None: drawn)
    failure: float = 0.8  # chance per call during an episode


@dataclass(frozen=True)
class Quota:
    rpm: int | None = None
    ipm: int | None = None
    rpd: int | None = None


@dataclass(frozen=True)
class ModelBehaviour:
    latency_s: tuple[float, float] = (10.0, 20.0)  # successes, normal
    busy_latency_s: tuple[float, float] | None = None  # successes during an episode
    error_latency_s: tuple[float, float] = (0.5, 2.0)  # how long a refusal takes
    overloaded: float = 0.0  # chance per call outside episodes
    unavailable: float = 0.0
    server_error: float = 0.0
    episodes: Episodes | None = None
    quota: Quota | None = None  # None: no quota enforced


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    models: dict[str, ModelBehaviour]  # "*" applies to models not listed

    def behaviour(self, model: str) -> ModelBehaviour:
        return self.models.get(model) or self.models.get("*") or ModelBehaviour()


PRO_IDS = ("gemini-3-pro-image-preview", "gemini-3-pro-image")
FLASH_ID = "gemini-2.5-flash-image"

_PRO_CALM = ModelBehaviour(latency_s=(20.0, 40.0))
_FLASH_CALM = ModelBehaviour(latency_s=(10.0, 20.0))


def _for_pro(behaviour: ModelBehaviour) -> dict[str, ModelBehaviour]:
    return dict.fromkeys(PRO_IDS, behaviour)


def builtin_profiles(catalogue_quotas: dict[str, Quota] | None = None) -> dict[str, Profile]:
    """The four built-in profiles. `catalogue_quotas` gives the `quota` profile the
    catalogue's rpm / ipm / rpd, so a client that respects its catalogue never sees a
    429 it caused itself, and one that does not, does."""
    quotas = catalogue_quotas or {
        **dict.fromkeys(PRO_IDS, Quota(rpm=20, ipm=20, rpd=1000)),
        FLASH_ID: Quota(rpm=150, ipm=100, rpd=10000),
        "*": Quota(rpm=50, ipm=50),
    }
    return {
        "calm": Profile(
            "calm",
            "Every call succeeds at normal latency.",
            {**_for_pro(_PRO_CALM), FLASH_ID: _FLASH_CALM, "*": _FLASH_CALM},
        ),
        "peak": Profile(
            "peak",
            "Peak hours: Pro fails ~45 % with 503 overloaded in episodes (the first one "
            "from the switch) and slows to 60-100 s while overloaded; Flash stays under 10 %.",
            {
                # Half the time in an episode (75 % failures), half outside (14 %), with
                # 1 % server errors: 0.5 x 0.75 + 0.5 x 0.14 + 0.01 = 45.5 %. The first
                # episode starts at the switch, so whoever switches to `peak` and submits
                # sees it at once rather than after minutes of calm.
                **_for_pro(
                    ModelBehaviour(
                        latency_s=(20.0, 40.0),
                        busy_latency_s=(60.0, 100.0),
                        overloaded=0.14,
                        server_error=0.01,
                        episodes=Episodes(
                            every_s=(60.0, 300.0),
                            last_s=(60.0, 300.0),
                            first_at_s=0.0,
                            failure=0.75,
                        ),
                    )
                ),
                # A quarter of the time in an episode (15 %), 4 % otherwise: ~6.75 %.
                FLASH_ID: ModelBehaviour(
                    latency_s=(10.0, 20.0),
                    busy_latency_s=(15.0, 30.0),
                    overloaded=0.04,
                    episodes=Episodes(every_s=(120.0, 600.0), last_s=(40.0, 200.0), failure=0.15),
                ),
                "*": ModelBehaviour(latency_s=(10.0, 20.0), overloaded=0.02),
            },
        ),
        "outage": Profile(
            "outage",
            "Pro answers 503 UNAVAILABLE for six hours from the switch; the others are calm.",
            {
                **_for_pro(
                    ModelBehaviour(
                        latency_s=(20.0, 40.0),
                        episodes=Episodes(
                            kind="unavailable",
                            first_at_s=0.0,
                            last_s=(21600.0, 21600.0),
                            every_s=(86400.0, 86400.0),
                            failure=1.0,
                        ),
                    )
                ),
                FLASH_ID: _FLASH_CALM,
                "*": _FLASH_CALM,
            },
        ),
        "quota": Profile(
            "quota",
            "Token-bucket quotas per model (requests per minute and day, images per "
            "minute); over quota answers 429 with QuotaFailure and RetryInfo.",
            {
                **{m: replace(_PRO_CALM, quota=quotas.get(m)) for m in PRO_IDS},
                FLASH_ID: replace(_FLASH_CALM, quota=quotas.get(FLASH_ID)),
                "*": replace(_FLASH_CALM, quota=quotas.get("*", Quota(rpm=50, ipm=50))),
            },
        ),
    }


def _pair(value, what: str) -> tuple[float, float]:
    if isinstance(value, int | float):
        value = [value, value]
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and v >= 0 for v in value)
        or value[0] > value[1]
    ):
        raise ProfileError(f"{what} must be [low, high] seconds with 0 <= low <= high")
    return (float(value[0]), float(value[1]))


def _chance(value, what: str) -> float:
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ProfileError(f"{what} must be a number between 0 and 1")
    return float(value)


def _known(data: dict, cls, what: str) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ProfileError(f"{what}: unknown keys {sorted(unknown)}")


def parse_behaviour(data: dict, where: str) -> ModelBehaviour:
    if not isinstance(data, dict):
        raise ProfileError(f"{where} must be a table")
    _known(data, ModelBehaviour, where)
    kw: dict = {}
    for name in ("latency_s", "busy_latency_s", "error_latency_s"):
        if name in data:
            kw[name] = _pair(data[name], f"{where}.{name}")
    for name in FAULTS:
        if name in data:
            kw[name] = _chance(data[name], f"{where}.{name}")
    if sum(kw.get(n, 0.0) for n in FAULTS) > 1:
        raise ProfileError(f"{where}: the fault chances add up to more than 1")
    if "episodes" in data:
        ep = data["episodes"]
        if not isinstance(ep, dict):
            raise ProfileError(f"{where}.episodes must be a table")
        _known(ep, Episodes, f"{where}.episodes")
        kind = ep.get("kind", "overloaded")
        if kind not in ("overloaded", "unavailable"):
            raise ProfileError(f"{where}.episodes.kind must be overloaded or unavailable")
        first = ep.get("first_at_s")
        if first is not None and (not isinstance(first, int | float) or first < 0):
            raise ProfileError(f"{where}.episodes.first_at_s must be seconds >= 0")
        kw["episodes"] = Episodes(
            kind=kind,
            every_s=_pair(ep.get("every_s", [600, 1800]), f"{where}.episodes.every_s"),
            last_s=_pair(ep.get("last_s", [300, 900]), f"{where}.episodes.last_s"),
            first_at_s=None if first is None else float(first),
            failure=_chance(ep.get("failure", 0.8), f"{where}.episodes.failure"),
        )
    if "quota" in data:
        q = data["quota"]
        if not isinstance(q, dict):
            raise ProfileError(f"{where}.quota must be a table of rpm / ipm / rpd")
        _known(q, Quota, f"{where}.quota")
        for k, v in q.items():
            if not isinstance(v, int) or v < 0:
                raise ProfileError(f"{where}.quota.{k} must be a whole number >= 0")
        kw["quota"] = Quota(**q)
    return ModelBehaviour(**kw)


def load_profiles(path: str | Path | None, base: dict[str, Profile]) -> dict[str, Profile]:
    """The built-in profiles plus (or replaced by) those of the TOML file at `path`:

    [profiles.storm]
    description = "Flash overloaded too"
    [profiles.storm.models."gemini-2.5-flash-image"]
    latency_s = [10, 20]
    overloaded = 0.3
    """
    profiles = dict(base)
    if not path:
        return profiles
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"Cannot read the sandbox profiles {path}: {exc}") from exc
    for name, table in (data.get("profiles") or {}).items():
        if not isinstance(table, dict) or not isinstance(table.get("models", {}), dict):
            raise ProfileError(f"Profile {name}: must be a table with a models table")
        unknown = set(table) - {"description", "models"}
        if unknown:
            raise ProfileError(f"Profile {name}: unknown keys {sorted(unknown)}")
        models = {
            model: parse_behaviour(spec, f"profiles.{name}.models.{model}")
            for model, spec in table.get("models", {}).items()
        }
        if not models:
            raise ProfileError(f"Profile {name}: no models")
        profiles[name] = Profile(name, str(table.get("description", "")), models)
    return profiles


# --- Time -------------------------------------------------------------------------------


class Clock:
    """Virtual seconds since the sandbox started: real elapsed time divided by the time
    scale (0.01 runs 100 virtual seconds per real second). Changing the scale keeps the
    virtual time continuous."""

    def __init__(self, scale: float = 1.0, real=time.monotonic):
        self._real = real
        self._scale = scale
        self._base_real = real()
        self._base_virtual = 0.0

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        return self._base_virtual + (self._real() - self._base_real) / self._scale

    def set_scale(self, scale: float) -> None:
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
            raise ProfileError("The time scale must be a number above 0")
        self._base_virtual = self.now()
        self._base_real = self._real()
        self._scale = float(scale)


# --- State machines ---------------------------------------------------------------------


@dataclass
class EpisodeState:
    """Where one model is in its calm/episode alternation, advanced lazily."""

    spec: Episodes
    active: bool = False
    until: float = 0.0  # virtual time the current stretch ends
    started: float = 0.0  # when the current episode started (if active)
    count: int = 0

    @classmethod
    def start(cls, spec: Episodes, now: float, rng: random.Random) -> "EpisodeState":
        first = spec.first_at_s if spec.first_at_s is not None else rng.uniform(*spec.every_s)
        state = cls(spec=spec, until=now + first)
        state.advance(now, rng)
        return state

    def advance(self, now: float, rng: random.Random) -> None:
        # Bounded: a long pause at a tiny time scale skips at most this many stretches
        # one by one, then jumps (the state is memoryless enough at that point).
        for _ in range(10_000):
            if now < self.until:
                return
            self.active = not self.active
            if self.active:
                self.started = self.until
                self.count += 1
                self.until += max(rng.uniform(*self.spec.last_s), 1e-3)
            else:
                self.until += max(rng.uniform(*self.spec.every_s), 1e-3)
        self.until = now + rng.uniform(*self.spec.every_s)
        self.active = False


@dataclass
class TokenBucket:
    """`capacity` tokens refilled evenly over `window_s`; one token per call."""

    capacity: int
    window_s: float
    tokens: float = field(init=False)
    at: float = 0.0

    def __post_init__(self):
        self.tokens = float(self.capacity)

    def _refill(self, now: float) -> None:
        rate = self.capacity / self.window_s
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * rate)
        self.at = now

    def take(self, now: float, n: int = 1) -> float:
        """0.0 if the tokens were taken, else the virtual seconds until they would be."""
        self._refill(now)
        if self.capacity == 0:
            return self.window_s
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) * self.window_s / self.capacity


# The quota ids Google uses (docs/upstream.md); the "-PaidTier1" suffix as on a paid project.
QUOTA_IDS = {
    "rpm": "GenerateRequestsPerMinutePerProjectPerModel-PaidTier1",
    "ipm": "GenerateImagesPerMinutePerProjectPerModel-PaidTier1",
    "rpd": "GenerateRequestsPerDayPerProjectPerModel-PaidTier1",
}
QUOTA_METRICS = {
    "rpm": "generativelanguage.googleapis.com/generate_requests_per_model",
    "ipm": "generativelanguage.googleapis.com/generate_images_per_model",
    "rpd": "generativelanguage.googleapis.com/generate_requests_per_model_per_day",
}
WINDOWS = {"rpm": 60.0, "ipm": 60.0, "rpd": 86400.0}


@dataclass
class QuotaState:
    buckets: dict[str, TokenBucket]

    @classmethod
    def start(cls, quota: Quota, now: float) -> "QuotaState":
        buckets = {}
        for dim in ("rpm", "ipm", "rpd"):
            limit = getattr(quota, dim)
            if limit is not None:
                buckets[dim] = TokenBucket(limit, WINDOWS[dim], at=now)
        return cls(buckets)

    def take(self, now: float) -> tuple[str, float] | None:
        """None if the call fits every dimension (and takes its tokens); otherwise the
        first dimension exceeded and the virtual wait until it has room. A refused call
        takes no token from any bucket."""
        for dim, bucket in self.buckets.items():
            bucket._refill(now)
            if bucket.tokens < 1:
                return dim, bucket.take(now)
        for bucket in self.buckets.values():
            bucket.take(now)
        return None

    def levels(self) -> dict[str, float]:
        return {dim: round(b.tokens, 3) for dim, b in self.buckets.items()}


@dataclass(frozen=True)
class Verdict:
    outcome: str  # a taxonomy value: success, overloaded, unavailable, server_error, rate_limited
    latency_s: float  # unscaled
    quota_dim: str = ""
    retry_s: float = 0.0  # unscaled


class ModelState:
    """One model under one profile: its episodes and its quota buckets."""

    def __init__(self, behaviour: ModelBehaviour, now: float, rng: random.Random):
        self.behaviour = behaviour
        self.episodes = (
            EpisodeState.start(behaviour.episodes, now, rng) if behaviour.episodes else None
        )
        self.quota = QuotaState.start(behaviour.quota, now) if behaviour.quota else None
        self.calls = 0

    def decide(self, now: float, rng: random.Random) -> Verdict:
        """The outcome of one call at virtual time `now`."""
        b = self.behaviour
        self.calls += 1
        if self.quota:
            refused = self.quota.take(now)
            if refused:
                return Verdict("rate_limited", rng.uniform(0.05, 0.3), refused[0], refused[1])
        busy = False
        if self.episodes:
            self.episodes.advance(now, rng)
            busy = self.episodes.active
            if busy and rng.random() < self.episodes.spec.failure:
                return Verdict(self.episodes.spec.kind, rng.uniform(*b.error_latency_s))
        roll = rng.random()
        for fault in FAULTS:
            chance = getattr(b, fault)
            if roll < chance:
                return Verdict(fault, rng.uniform(*b.error_latency_s))
            roll -= chance
        latency = b.busy_latency_s if busy and b.busy_latency_s else b.latency_s
        return Verdict("success", rng.uniform(*latency))

    def describe(self, now: float) -> dict:
        state: dict = {"calls": self.calls}
        if self.episodes:
            e = self.episodes
            state["episode"] = {
                "kind": e.spec.kind,
                "active": e.active and now < e.until,
                "ends_in_s" if e.active else "starts_in_s": round(max(e.until - now, 0), 3),
                "count": e.count,
            }
        if self.quota:
            state["quota_tokens"] = self.quota.levels()
        return state
