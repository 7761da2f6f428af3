"""Creates (once) the CRM organisation, the two sales people who own
contacts, and a personal access token for relance; prints the token.

Run with DJANGO_SETTINGS_MODULE=crm.settings inside the CRM's venv, and
RELANCE_TOKEN_NAME naming this checkout's token: only that token is
replaced, so another checkout's run keeps working.
"""

import os

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from common.models import Org, PersonalAccessToken, Profile  # noqa: E402

User = get_user_model()
org, _ = Org.objects.get_or_create(name="relance-tests")


def profile(email, role):
    user = User.objects.filter(email=email).first()
    if user is None:
        user = User.objects.create_user(email=email, password=None)
    p, _ = Profile.objects.get_or_create(
        user=user,
        org=org,
        defaults={"role": role, "is_active": True, "has_sales_access": True},
    )
    return p


bot = profile("relance-bot@example.com", "ADMIN")
profile("alice.owner@example.com", "USER")
profile("bruno.owner@example.com", "USER")
name = os.environ.get("RELANCE_TOKEN_NAME", "relance tests")
PersonalAccessToken.objects.filter(profile=bot, name=name).delete()
raw, _ = PersonalAccessToken.generate(bot, name)
print(raw)
