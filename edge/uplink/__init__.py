"""The site's uplink over NATS: generation escalation (`edge.uplink.generation`) and, in
sibling modules, outbox drain, heartbeats and config/model watch."""
