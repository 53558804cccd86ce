"""The sandbox's pure parts: profiles, episodes, token buckets, clock, triggers, painter.
No server, no sleep: a virtual clock drives the state machines."""

import io
import itertools
import random
from collections import Counter

import pytest
from PIL import Image

from generator.upstream.sandbox import painter
from generator.upstream.sandbox.profiles import (
    Clock,
    Episodes,
    EpisodeState,
    ModelState,
    ProfileError,
    Quota,
    QuotaState,
    TokenBucket,
    builtin_profiles,
    load_profiles,
)
from generator.upstream.sandbox.server import format_duration, parse_triggers

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"


def share_of_failures(profile: str, model: str, calls: int, spacing_s: float, seed: int = 0):
    state = ModelState(builtin_profiles()[profile].behaviour(model), 0.0, random.Random(seed))
    rng = random.Random(f"{seed}:{model}")
    outcomes = Counter(state.decide(i * spacing_s, rng).outcome for i in range(calls))
    return outcomes


@pytest.mark.parametrize("seed", range(5))
def test_it_peak_fails_about_45_percent_of_pro_calls_and_under_10_of_flash(seed):
    # 1,000 calls spread over ~14 virtual hours: many episodes come and go.
    pro = share_of_failures("peak", PRO, 1000, 50.0, seed)
    flash = share_of_failures("peak", FLASH, 1000, 50.0, seed)
    assert 0.40 <= pro["overloaded"] / 1000 <= 0.50, pro
    assert flash["overloaded"] / 1000 < 0.10, flash


def test_it_overloads_come_in_episodes_not_coin_flips():
    # Calls one virtual second apart: failures cluster, so a failure is followed by
    # another far more often than the overall rate.
    state = ModelState(builtin_profiles()["peak"].behaviour(PRO), 0.0, random.Random(1))
    rng = random.Random(2)
    failed = [state.decide(float(t), rng).outcome != "success" for t in range(5000)]
    rate = sum(failed) / len(failed)
    after_failure = [b for a, b in itertools.pairwise(failed) if a]
    assert sum(after_failure) / len(after_failure) > rate + 0.1


def test_it_an_episode_starts_and_lasts():
    spec = Episodes(every_s=(100.0, 100.0), last_s=(50.0, 50.0), failure=1.0)
    rng = random.Random(0)
    state = EpisodeState.start(spec, 0.0, rng)
    timeline = []
    for t in (0, 99, 100, 149, 150, 249, 250):
        state.advance(float(t), rng)
        timeline.append(state.active)
    assert timeline == [False, False, True, True, False, False, True]


def test_it_outage_answers_unavailable_from_the_switch_for_hours():
    state = ModelState(builtin_profiles()["outage"].behaviour(PRO), 1000.0, random.Random(0))
    rng = random.Random(0)
    assert {state.decide(1000.0 + t, rng).outcome for t in range(0, 21000, 100)} == {"unavailable"}
    assert state.decide(1000.0 + 21700, rng).outcome == "success"
    flash = ModelState(builtin_profiles()["outage"].behaviour(FLASH), 0.0, rng)
    assert flash.decide(1.0, rng).outcome == "success"


def test_it_a_token_bucket_refuses_with_the_wait_until_the_next_token():
    bucket = TokenBucket(capacity=2, window_s=60.0, at=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(30.0)
    assert bucket.take(30.0) == 0.0


def test_it_quota_names_the_dimension_exceeded_and_refills():
    quota = QuotaState.start(Quota(rpm=2, rpd=3), 0.0)
    assert quota.take(0.0) is None
    assert quota.take(1.0) is None
    assert quota.take(2.0) == ("rpm", pytest.approx(28.0))
    assert quota.take(60.0) is None
    dim, wait = quota.take(120.0)
    assert dim == "rpd" and wait > 3600


def test_it_the_quota_profile_answers_429_with_the_wait():
    state = ModelState(builtin_profiles()["quota"].behaviour(PRO), 0.0, random.Random(0))
    rng = random.Random(0)
    outcomes = [state.decide(0.0, rng) for _ in range(21)]
    assert [v.outcome for v in outcomes[:20]] == ["success"] * 20
    assert outcomes[20].outcome == "rate_limited" and outcomes[20].quota_dim == "rpm"
    assert outcomes[20].retry_s == pytest.approx(3.0)


def test_it_calm_never_fails():
    outcomes = share_of_failures("calm", PRO, 500, 10.0)
    assert outcomes == {"success": 500}


def test_it_the_clock_compresses_time_and_stays_continuous_across_scale_changes():
    now = [100.0]
    clock = Clock(0.01, real=lambda: now[0])
    now[0] += 1.0
    assert clock.now() == pytest.approx(100.0)
    clock.set_scale(1.0)
    now[0] += 1.0
    assert clock.now() == pytest.approx(101.0)
    with pytest.raises(ProfileError):
        clock.set_scale(0)


def test_it_a_toml_file_adds_profiles_and_rejects_mistakes(tmp_path):
    path = tmp_path / "profiles.toml"
    path.write_text(
        """
[profiles.storm]
description = "Flash overloaded too"
[profiles.storm.models."gemini-2.5-flash-image"]
latency_s = [1, 2]
overloaded = 0.3
[profiles.storm.models."gemini-2.5-flash-image".episodes]
every_s = [10, 20]
last_s = 5
failure = 0.9
[profiles.storm.models."*".quota]
rpm = 5
"""
    )
    profiles = load_profiles(path, builtin_profiles())
    storm = profiles["storm"]
    assert storm.behaviour(FLASH).overloaded == 0.3
    assert storm.behaviour(FLASH).episodes.last_s == (5.0, 5.0)
    assert storm.behaviour(PRO).quota == Quota(rpm=5)
    assert "calm" in profiles
    for bad, message in [
        ("[profiles.x.models.m]\noverloaded = 2", "between 0 and 1"),
        ("[profiles.x.models.m]\nlatency_s = [5, 1]", "low <= high"),
        ("[profiles.x.models.m]\nlatncy_s = [1, 2]", "unknown keys"),
        ('[profiles.x.models.m.episodes]\nkind = "sad"', "overloaded or unavailable"),
        ("[profiles.x", "Cannot read"),
    ]:
        path.write_text(bad)
        with pytest.raises(ProfileError, match=message):
            load_profiles(path, {})


def test_it_triggers_parse_variant_model_and_count():
    (t,) = parse_triggers("sandbox:unavailable@gemini-3-pro-image-preview*3 a cat")
    assert (t.variant, t.model, t.times) == ("unavailable", PRO, 3)
    (slow,) = parse_triggers("a slow cat sandbox:slow=2.5")
    assert (slow.variant, slow.value) == ("slow", 2.5)
    assert parse_triggers("sandbox:nonsense and sandbox:slow") == []


def test_it_durations_are_written_as_google_does():
    assert format_duration(19.0) == "19s"
    assert format_duration(45.837906927) == "45.837906927s"
    assert format_duration(0.0) == "0.001s"


def test_it_the_painter_is_deterministic_per_prompt_and_seed():
    a = painter.paint("a red apple", model=FLASH, size=(1024, 1024), seed=1)
    assert a == painter.paint("a red apple", model=FLASH, size=(1024, 1024), seed=1)
    assert a != painter.paint("a red apple", model=FLASH, size=(1024, 1024), seed=2)
    assert a != painter.paint("a green apple", model=FLASH, size=(1024, 1024), seed=1)


def test_it_the_painter_answers_at_the_real_models_sizes_and_formats():
    pro = painter.paint("x", model=PRO, size=painter.pixel_size(PRO, "21:9", "4K"))
    image = Image.open(io.BytesIO(pro))
    assert (image.format, image.size) == ("JPEG", (6336, 2688))
    flash = Image.open(
        io.BytesIO(painter.paint("x", model=FLASH, size=painter.pixel_size(FLASH, "9:16", "4K")))
    )
    assert (flash.format, flash.size) == ("PNG", (768, 1344))


def test_it_an_edit_shows_the_reference_transformed():
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (0, 0, 255)).save(buffer, "PNG")
    edited = Image.open(
        io.BytesIO(
            painter.paint("make it", model=FLASH, size=(1024, 1024), reference=buffer.getvalue())
        )
    )
    r, g, b = edited.convert("RGB").getpixel((512, 400))
    assert b > r and b > g  # still mostly the blue reference, tinted


def test_it_peak_starts_its_first_pro_episode_at_the_switch():
    # Whoever switches to peak and submits must see it: no calm stretch first.
    state = ModelState(builtin_profiles()["peak"].behaviour(PRO), 500.0, random.Random(4))
    episode = state.describe(500.0)["episode"]
    assert episode["active"] is True
    assert "starts_in_s" not in episode
