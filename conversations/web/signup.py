"""Joining without staff typing a password: an invite link, or self-signup when it is on.

Both pages take a username and a password twice, create a member who is not
staff, sign them in and go to the chat. An invite that is unknown, used,
expired or revoked gets the same answer (404), whichever it is.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from conversations.accounts import invites

BACKEND = "django.contrib.auth.backends.ModelBackend"


@never_cache
@csrf_protect
def invite(request, token: str):
    if request.user.is_authenticated:
        return redirect("index")  # the link stays unused for the person it was meant for
    if invites.find_invite(token) is None:
        return render(request, "registration/invite_invalid.html", status=404)
    form = invites.MemberCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            member = invites.accept_invite(token, form)
        except invites.InviteInvalid:  # spent by someone else while this form was open
            return render(request, "registration/invite_invalid.html", status=404)
        login(request, member, backend=BACKEND)
        return redirect("index")
    return render(request, "registration/signup.html", {"form": form, "invited": True})


@never_cache
@csrf_protect
def signup(request):
    if not settings.SIGNUP_ENABLED:
        raise Http404("Signing up is not open on this server.")
    if request.user.is_authenticated:
        return redirect("index")
    form = invites.MemberCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        member = invites.sign_up(form)
        login(request, member, backend=BACKEND)
        return redirect("index")
    return render(request, "registration/signup.html", {"form": form, "invited": False})
