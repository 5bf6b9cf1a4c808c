"""Signed outbound event webhooks: endpoints an organization registers, and the durable outbox delivering
events to them under the Standard Webhooks scheme (docs/operations.md "Event webhooks")."""
