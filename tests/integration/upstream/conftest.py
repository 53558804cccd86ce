import pytest


@pytest.fixture
def fast(sandbox_settings, settings):
    """The sandbox at TIME_SCALE 0.0001: an hour of its time takes 0.36 s."""
    settings.TIME_SCALE = 0.0001
    sandbox_settings.reset()
    return sandbox_settings
