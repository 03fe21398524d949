"""Why an input record or an identity was rejected: the one enumeration of reason codes.

Domain layer. The dead-letter schema (schemas/) lists the same codes; a test keeps them equal.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    # decoding (codecs/)
    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_TYPE = "unknown_type"
    OVERSIZE = "oversize"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    # identities (an event all of whose identities are rejected goes to the dead letter)
    INVALID_IDENTITY = "invalid_identity"
    BLOCKED_IDENTITY = "blocked_identity"
    IDENTITY_CONFLICT = "identity_conflict"
    LIMIT_EXCEEDED = "limit_exceeded"
    # lifecycle
    INSTALL_UNINSTALLED = "install_uninstalled"
    ALREADY_PERSONALIZED = "already_personalized"
    NOT_PERSONALIZED = "not_personalized"
    UNKNOWN_PERSON = "unknown_person"
    # a record whose decoding or processing raised: a defect, isolated to this record
    PROCESSING_ERROR = "processing_error"
