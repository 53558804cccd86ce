from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self):
        # The off-peak scheduler learns from the failure table the rollups keep; the
        # generator never imports monitoring, so monitoring hands the table in.
        from generator import economy
        from monitoring.rollups import failures_by_hour

        economy.learn_failures_from(failures_by_hour)
