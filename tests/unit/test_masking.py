"""What the lookup API shows by default: identities masked, personal attribute values hidden,
ids and structure kept, and any field masking.py does not know hidden."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from tests.support.processes import REPO_ROOT

from idstream.domain.events import PERSON_STANDARD_ATTRIBUTES
from idstream.masking import (
    HIDDEN,
    INSTALL_VIEW_RULES,
    SNAPSHOT_RULES,
    mask_install_view,
    mask_snapshot,
)

SCHEMA = json.loads((REPO_ROOT / "schemas" / "output" / "profile-snapshot.schema.json").read_text())

SNAPSHOT: dict[str, Any] = {
    "profileId": "p_0123456789abcdef0123",
    "kind": "person",
    "pool": "default",
    "version": 7,
    "createdAt": 1732352400000,
    "identities": {
        "externalUserId": "cust-1842",
        "emails": ["ana@example.com", "ana.b@work.example"],
        "phones": ["+351912345678"],
    },
    "attributes": {
        "firstName": "Ana",
        "lastName": "Baptista",
        "birthday": "1985-03-12",
        "city": "Lisbon",
        "address": "Rua Augusta 1",
        "gender": None,
    },
    "customAttributes": {"loyaltyTier": "gold", "points": 120, "optIn": True, "gone": None},
    "tags": ["vip"],
    "installs": [
        {
            "pushRegistrationId": "fcm:dGhpcyBpcyBhIHRva2Vu",
            "appCode": "shop-android",
            "lifecycle": "personalized",
            "primaryDevice": True,
            "pushEnabled": True,
            "systemData": {"platform": "android"},
            "standardProperties": {"osVersion": "14"},
            "customAttributes": {"nickname": "anab"},
            "linkedAt": 1732352400000,
        }
    ],
    "channels": {
        "emails": [{"value": "ana@example.com", "primary": True}],
        "phones": [{"value": "+351912345678", "primary": False}],
        "push": [
            {"pushRegistrationId": "fcm:dGhpcyBpcyBhIHRva2Vu", "appCode": "a", "primary": True}
        ],
    },
    "mergedFrom": ["p_ffffffffffffffffffff"],
}

PERSONAL = [
    "cust-1842",
    "ana@example.com",
    "ana.b@work.example",
    "+351912345678",
    "Ana",
    "Baptista",
    "1985-03-12",
    "Lisbon",
    "Rua Augusta",
    "gold",
    "120",
    "anab",
]


def test_a_masked_snapshot_shows_no_personal_value() -> None:
    masked = mask_snapshot(SNAPSHOT)
    text = json.dumps(masked)
    for value in PERSONAL:
        assert value not in text, value
    assert masked["identities"] == {
        "externalUserId": "c***2",
        "emails": ["a***@e***.com", "a***@w***.example"],
        "phones": ["+35********78"],
    }
    assert masked["channels"]["emails"] == [{"value": "a***@e***.com", "primary": True}]
    assert masked["channels"]["phones"] == [{"value": "+35********78", "primary": False}]
    # Which attributes are set stays visible; an unset one stays null.
    assert masked["attributes"] == {
        "firstName": HIDDEN,
        "lastName": HIDDEN,
        "birthday": HIDDEN,
        "city": HIDDEN,
        "address": HIDDEN,
        "gender": None,
    }
    assert masked["customAttributes"] == {
        "loyaltyTier": HIDDEN,
        "points": HIDDEN,
        "optIn": HIDDEN,
        "gone": None,
    }
    install = masked["installs"][0]
    assert install["customAttributes"] == {"nickname": HIDDEN}
    assert install["systemData"] == {"platform": "android"}


def test_ids_structure_and_device_data_are_kept() -> None:
    masked = mask_snapshot(SNAPSHOT)
    for key in ("profileId", "kind", "pool", "version", "createdAt", "tags", "mergedFrom"):
        assert masked[key] == SNAPSHOT[key], key
    install = {k: v for k, v in masked["installs"][0].items() if k != "customAttributes"}
    assert install == {k: v for k, v in SNAPSHOT["installs"][0].items() if k != "customAttributes"}
    assert masked["channels"]["push"] == SNAPSHOT["channels"]["push"]
    # Still a valid snapshot, so clients parse it as before.
    Draft202012Validator(SCHEMA).validate(masked)


def test_an_anonymous_profile_masks_to_itself_but_for_attributes() -> None:
    anonymous = {
        **SNAPSHOT,
        "kind": "anonymous",
        "identities": {"externalUserId": None, "emails": [], "phones": []},
        "attributes": {},
        "customAttributes": {},
        "channels": {"emails": [], "phones": [], "push": []},
    }
    assert mask_snapshot(anonymous) == mask_snapshot(mask_snapshot(anonymous))
    assert mask_snapshot(anonymous)["identities"] == anonymous["identities"]


def test_masking_twice_changes_nothing() -> None:
    once = mask_snapshot(SNAPSHOT)
    assert mask_snapshot(once) == once


def test_every_snapshot_field_of_the_schema_is_classified() -> None:
    # A field added to the schema must be classified in masking.py (else it shows as ***).
    assert set(SCHEMA["properties"]) == set(SNAPSHOT_RULES)
    install_fields = SCHEMA["properties"]["installs"]["items"]["properties"]
    assert set(install_fields) <= set(SNAPSHOT["installs"][0])
    # Every standard person attribute is personal: none is in a "kept" list anywhere.
    masked = mask_snapshot({"attributes": dict.fromkeys(PERSON_STANDARD_ATTRIBUTES, "x")})
    assert set(masked["attributes"].values()) == {HIDDEN}


def test_unknown_fields_are_hidden() -> None:
    masked = mask_snapshot(
        {
            **SNAPSHOT,
            "newField": {"email": "ana@example.com"},
            "identities": {**SNAPSHOT["identities"], "fax": "+351212345678"},
            "installs": [{**SNAPSHOT["installs"][0], "ownerName": "Ana"}],
        }
    )
    assert masked["newField"] == HIDDEN
    assert masked["identities"]["fax"] == HIDDEN
    assert masked["installs"][0]["ownerName"] == HIDDEN


def test_an_install_view_hides_custom_attribute_values_only() -> None:
    view = {
        "pushRegistrationId": "fcm:1",
        "appCode": "shop",
        "pool": "default",
        "profileId": "p_1",
        "lifecycle": "personalized",
        "pending": False,
        "uninstalledAt": None,
        "primaryDevice": True,
        "systemData": {"platform": "ios"},
        "customAttributes": {"nickname": "anab", "theme": "dark"},
        "lastLaunch": 5,
        "droppedLaunches": 1,
    }
    assert set(view) == set(INSTALL_VIEW_RULES)
    masked = mask_install_view(view)
    assert masked == {**view, "customAttributes": {"nickname": HIDDEN, "theme": HIDDEN}}


def test_the_rules_name_every_field_the_install_view_has() -> None:
    from idstream.domain.install_state import InstallRecord
    from idstream.drivers.faust.web import install_view

    record = InstallRecord("fcm:1", "shop", "default", "e1", "a_1")
    assert set(install_view(record)) == set(INSTALL_VIEW_RULES)
