"""Members, as staff manage them: Django's user admin on the project's own user model."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from conversations.models import Member

admin.site.register(Member, UserAdmin)
