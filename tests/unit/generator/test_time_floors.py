"""TIME_SCALE compresses the upstream's behaviour for drills and tests, never what
measures this machine: a request's time budget keeps its real-time floor."""

from generator.resilience.from_settings import policy_config_from_settings


def test_it_keeps_the_request_budget_above_its_floor_at_a_tiny_time_scale(settings):
    settings.TIME_SCALE = 0.0001  # 1200 s would be 0.12 s
    assert policy_config_from_settings().request_budget_s == settings.REQUEST_BUDGET_FLOOR_S


def test_it_scales_the_request_budget_above_its_floor(settings):
    settings.TIME_SCALE = 0.5
    assert policy_config_from_settings().request_budget_s == 600.0
    assert policy_config_from_settings().backoff_cap_s == settings.POLICY_BACKOFF_CAP_S * 0.5
