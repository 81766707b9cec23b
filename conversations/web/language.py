"""A signed-in member who chose a language on their account page reads every page in it.

Django's LocaleMiddleware, earlier, has picked the browser's language (or the
language cookie's); this one overrides it with the member's choice.
"""

from __future__ import annotations

from django.utils import translation

from conversations.accounts.language import chosen_language
from conversations.outages import DATABASE_OUTAGE_ERRORS


class MemberLanguageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            chosen = chosen_language(request.user)  # reads the session and the member
        except DATABASE_OUTAGE_ERRORS:
            chosen = None  # the view meets the outage too, and answers 503 (outages.py)
        if chosen and chosen != request.LANGUAGE_CODE:
            translation.activate(chosen)
            request.LANGUAGE_CODE = chosen
        return self.get_response(request)
