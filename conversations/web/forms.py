"""The account page's form: language, theme and default model, saved to the Member."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from conversations.models import Member
from conversations.upstream import providers

FOLLOW_BROWSER = ""


def offered_models(member) -> list[str] | None:
    """The models the member may use (the source of /api/models/), or None when the model server
    cannot be asked for its list (the page then takes a free text)."""
    _names, failure = providers.default_models()
    if failure is not None:
        return None
    return list(dict.fromkeys(choice.model for choice in providers.choices_for(member)))


class AccountForm(forms.ModelForm):
    """One form for the account page and the page's own switches (`partial`: only the fields given)."""

    language = forms.ChoiceField(
        label=_("Language"), required=False,
        choices=[(FOLLOW_BROWSER, _("Follow the browser")), *settings.LANGUAGES],
    )

    class Meta:
        model = Member
        fields = ["language", "theme", "default_model"]
        labels = {"theme": _("Theme"), "default_model": _("Default model")}
        help_texts = {"default_model": _("New chats start with this model.")}

    def __init__(self, *args, models: list[str] | None = None, partial: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["theme"].required = False
        if models:
            current = self.instance.default_model
            choices = [(FOLLOW_BROWSER, _("The team's default (%(model)s)") % {"model": settings.DEFAULT_MODEL})]
            choices += [(name, name) for name in models]
            if current and current not in models:  # keep a choice the server no longer offers visible
                choices.append((current, current))
            self.fields["default_model"] = forms.ChoiceField(
                label=_("Default model"), required=False, choices=choices,
                help_text=_("New chats start with this model."),
            )
        else:
            # The model server cannot be asked: a free text, so the page still works.
            self.fields["default_model"].help_text = _(
                "The model server could not be reached for its list; type a model's name, "
                "or leave it empty for the team's default.")
        if partial and self.data is not None:
            for name in list(self.fields):
                if name not in self.data:
                    del self.fields[name]
