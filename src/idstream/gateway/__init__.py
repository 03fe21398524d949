"""The ingestion gateway: a Segment/RudderStack-compatible HTTP tracking API in front of Kafka.

Entry-point layer. `mapping` turns one tracking-API message into idstream input events (pure),
`intake` turns one request body into records to produce and dead letters (pure), `server` is
the HTTP edge and `kafka` the producer. docs/gateway.md documents the mapping.
"""
