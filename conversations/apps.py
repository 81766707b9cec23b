from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from . import login_throttle

        user_login_failed.connect(login_throttle.count_failure, dispatch_uid="login_throttle.count_failure")
        user_logged_in.connect(login_throttle.reset_on_login, dispatch_uid="login_throttle.reset_on_login")
