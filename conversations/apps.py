from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in, user_logged_out
        from django.db.models.signals import post_save

        from conversations.accounts import sessions as session_auth
        from conversations.accounts import throttle as login_throttle

        user_logged_in.connect(login_throttle.reset_on_login, dispatch_uid="login_throttle.reset_on_login")
        user_logged_out.connect(session_auth.on_logged_out, dispatch_uid="session_auth.on_logged_out")
        post_save.connect(
            session_auth.on_member_saved, sender=get_user_model(), dispatch_uid="session_auth.on_member_saved"
        )
