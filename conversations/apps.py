from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in, user_logged_out
        from django.db.models.signals import post_save

        from conversations.accounts import sessions, throttle
        from conversations.models import members_changed, memo

        user_logged_in.connect(throttle.reset_on_login, dispatch_uid="login_throttle.reset_on_login")
        # Sign-out, a new password, deactivation: the member's open sockets are re-checked at once.
        user_logged_out.connect(sessions.on_logged_out, dispatch_uid="sessions.on_logged_out")
        post_save.connect(sessions.on_member_saved, sender=get_user_model(), dispatch_uid="sessions.on_member_saved")
        members_changed.connect(sessions.on_members_changed, dispatch_uid="sessions.on_members_changed")
        # Providers, models, groups and quotas changed: this process's memos of them are dropped.
        memo.connect_signals()
