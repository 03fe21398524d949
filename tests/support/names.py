"""Unique Kafka topic, group and app names per test, so tests never share state on a broker."""

from __future__ import annotations

import re
import uuid


class UniqueNames:
    """Names made of a prefix, the test's name and a random suffix fixed per instance."""

    def __init__(self, test_name: str) -> None:
        slug = re.sub(r"[^a-zA-Z0-9]+", "-", test_name).strip("-").lower()
        self.base = f"t-{slug[:60]}-{uuid.uuid4().hex[:8]}"

    def topic(self, role: str = "topic") -> str:
        return f"{self.base}.{role}"

    def group(self, role: str = "group") -> str:
        return f"{self.base}.{role}"

    def app_id(self, role: str = "app") -> str:
        # Faust prefixes internal topics with the app id; keep it topic-safe.
        return f"{self.base}-{role}"
